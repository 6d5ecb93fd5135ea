"""The power-loss rows of ``edgebuf reliability``: trials of ``edgebuf.lab.powerloss`` run
per scenario, each cut held to its own bound, as a table."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebuf.lab.powercut import PowerCutFS
from edgebuf.lab.powerloss import (
    CAMERA_FPS,
    PowerLossRow,
    Trial,
    cleanup_duration,
    cleanup_trial,
    cloud_trial,
    edge_trial,
)
from edgebuf.lab.powerrepair import PHASES, repair_duration, repair_trial


# ---------------------------------------------------------------------- rows
def _row(name: str, trials: list[Trial], bound_per_trial: Callable[[Trial], int],
         notes: str) -> PowerLossRow:  # fmt: skip
    return PowerLossRow(
        name,
        len(trials),
        sum(t.acked for t in trials),
        sum(t.lost for t in trials),
        sum(bound_per_trial(t) for t in trials),
        max((t.lost for t in trials), default=0),
        notes,
        sum(1 for t in trials if t.lost > bound_per_trial(t)),
    )


def normal_bound(trial: Trial, sync_interval: float, batch: int = 32) -> int:
    """What a cut may lose in ``normal`` mode: ``sync_interval`` worth of records at the
    rate logged, plus one batch."""
    return int(trial.rate * sync_interval) + batch


def power_loss_rows(trials: int = 5, seed: int = 0,
                    progress: Callable[[str], None] = print) -> list[PowerLossRow]:  # fmt: skip
    """The power-loss rows of ``edgebuf reliability``: ``trials`` cuts per row."""
    import tempfile

    rng = random.Random(seed)
    rows: list[PowerLossRow] = []
    with PowerCutFS() as fs, tempfile.TemporaryDirectory(prefix="edgebuf-power-") as tmp:
        progress(f"power cuts: edge full, {trials} trials ...")
        full = [edge_trial(fs, durability="full", fps=0, seconds=rng.uniform(0.5, 2.0),
                           name="full", seed=i) for i in range(trials)]  # fmt: skip
        rows.append(_row("power cut: edge full, cloud down, flat out", full, lambda t: 0,
                         "log_prediction returned = on disk"))  # fmt: skip
        progress(f"power cuts: edge normal, {trials} trials ...")
        normal = [edge_trial(fs, durability="normal", fps=CAMERA_FPS,
                             seconds=rng.uniform(1.5, 4.0), name="normal", seed=i)
                  for i in range(trials)]  # fmt: skip
        rows.append(_row(
            f"power cut: edge normal, cloud down, {CAMERA_FPS:g} fps", normal,
            lambda t: normal_bound(t, 1.0),
            "bound: sync_interval (1 s) of records + one batch, per cut",
        ))  # fmt: skip
        progress(f"power cuts: edge normal while shipping, {trials} trials ...")
        work = Path(tmp)
        from cloud.testing import CloudServer

        with CloudServer(f"sqlite:///{work}/sink.db") as sink:
            ship = [edge_trial(fs, durability="normal", fps=CAMERA_FPS,
                               seconds=rng.uniform(1.5, 4.0), endpoint=sink.url,
                               device=f"ship-{i}", name="ship", seed=i)
                    for i in range(trials)]  # fmt: skip
        rows.append(_row(
            f"power cut: edge normal, shipping, {CAMERA_FPS:g} fps", ship,
            lambda t: normal_bound(t, 1.0),
            "kept = on the edge after the cut or in the cloud; same bound",
        ))  # fmt: skip
        progress(f"power cuts: the cloud's SQLite, {trials} trials ...")
        cloud = [cloud_trial(fs, work, seconds=rng.uniform(1.0, 3.0), seed=i)
                 for i in range(trials)]  # fmt: skip
        rows.append(_row("power cut: cloud (SQLite, defaults), edge shipping", cloud,
                         lambda t: 0, "records = acknowledged with 200 (edge marked sent)"))  # fmt: skip
        progress(f"power cuts: cleanup + VACUUM, {trials} trials ...")
        took = cleanup_duration(fs)
        clean = [cleanup_trial(fs, seed=i, rng=rng, within=took) for i in range(trials)]
        mid = sum(1 for t in clean if not t.extra)
        rows.append(_row("power cut: edge cleanup + VACUUM", clean, lambda t: 0,
                         f"records = unsent rows, durable before; integrity_check ok;"
                         f" {mid} cuts mid-run (run: {took:.2f} s)"))  # fmt: skip
        progress(f"power cuts: edgebuf repair, {trials} trials ...")
        rows.append(repair_row(fs, trials, rng))
    return rows


def repair_row(fs: PowerCutFS, trials: int, rng: random.Random) -> PowerLossRow:
    """``trials`` cuts of ``edgebuf repair`` (``edgebuf.lab.powerrepair``) as one row."""
    took = repair_duration(fs)
    cuts = [repair_trial(fs, seed=i, rng=rng, within=took) for i in range(trials)]
    where = ", ".join(f"{sum(1 for t in cuts if t.extra == k)} {name}"
                      for k, name in PHASES.items())  # fmt: skip
    return _row("power cut: edge repair", cuts, lambda t: 0,
                "records = unsent rows an uncut repair of the same damaged file salvages;"
                " integrity_check ok, no row from nowhere, sequences not back;"
                f" cuts: {where} (run: {took:.2f} s)")  # fmt: skip


def format_rows(rows: list[PowerLossRow]) -> str:
    out = ["| power loss | trials | acknowledged | lost | allowed | worst cut | notes |",
           "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        out.append(f"| {r.scenario} | {r.trials} | {r.records} | {r.lost} | {r.bound} |"
                   f" {r.max_lost_per_trial} | {r.notes} |")  # fmt: skip
    return "\n".join(out)


def reliability_rows(trials: int = 20, seed: int = 0,
                     progress: Callable[[str], None] = print) -> list[Any]:  # fmt: skip
    """``power_loss_rows`` as rows of ``edgebuf reliability`` (``ScenarioResult``). The
    normal-mode row may lose its stated window: it counts as within bounds (``injected``)
    as long as every cut stayed within it; one row says why when FUSE is unusable here."""
    from edgebuf.lab.powercut import unusable_reason
    from edgebuf.lab.scenario import ScenarioResult

    reason = unusable_reason()
    if reason is not None:
        return [ScenarioResult("power cuts (edgebuf.lab.powercut)", 0, 0, 0, 0, 0,
                               f"skipped: {reason}")]  # fmt: skip
    out = []
    for r in power_loss_rows(trials, seed, progress):
        within = r.bound > 0 and r.ok
        notes = r.notes + (f"; allowed {r.bound} in total, worst cut {r.max_lost_per_trial}"
                           if r.bound else "")  # fmt: skip
        out.append(ScenarioResult(r.scenario, r.trials, r.records, r.lost, 0, 0, notes,
                                  injected_loss=within))  # fmt: skip
    return out
