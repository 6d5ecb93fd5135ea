"""The SIGKILL crash matrix: the edge killed at random moments in each phase of its work,
and during cleanup/VACUUM; then everything read back and counted."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgebuf.lab.faults import FaultProxy, kill_process
from edgebuf.lab.scenario import ScenarioResult, _drain, _duplicates_received, _Producer, _result
from edgebuf.records import prepare_record
from edgebuf.store import LocalBufferManager
from edgebuf.store.repair import check_integrity


# ---------------------------------------------------------------------- crash matrix
def _kill_phase(
    name: str,
    cloud,
    proxy: FaultProxy,
    work: Path,
    rng: random.Random,
    kills: int,
    setup: Callable[[], None],
    during: Callable[[], None],
    fps: float,
    window: tuple[float, float],
) -> ScenarioResult:
    device = re.sub(r"\W+", "-", name)
    db = work / f"{device}.db"
    dup_before = _duplicates_received(cloud.url)
    ids: list[str] = []
    for trial in range(kills):
        setup()
        producer = _Producer(db, proxy.url, device, fps=fps, start=trial * 1_000_000, seed=trial)
        producer.wait_started(timeout=30.0)  # a loaded box starts Python slowly
        during()
        time.sleep(rng.uniform(*window))
        producer.kill()
        ids += producer.ids
    proxy.pass_through()
    _drain(db, proxy.url, device)
    return _result(
        f"SIGKILL edge: {name}",
        cloud.url,
        device,
        ids,
        kills,
        dup_before,
        f"killed at random moments {window[0]:g}-{window[1]:g} s after its first record",
    )


def _cleanup_phase(cloud, work: Path, rng: random.Random, kills: int) -> ScenarioResult:
    """SIGKILL ``edgebuf cleanup`` (deletes + incremental vacuum) mid-run, many times."""
    device = "cleanup-vacuum"
    db = work / f"{device}.db"
    pending: list[str] = []
    for trial in range(kills):
        with LocalBufferManager(db) as store:
            recs = [
                prepare_record(
                    {"detections": [], "pad": "v" * 300}, now=time.time(), max_bytes=10_000
                )
                for _ in range(20_000)
            ]
            store.add_predictions(device, recs)
            store.mark_sent(store.claim(19_900).ids)  # delivered elsewhere: cleanup fodder
            pending = store.record_ids("pending")
        time.sleep(0.01)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgebuf.ops.cli",
                "cleanup",
                "--db",
                str(db),
                "--older-than-days",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.25, 0.9))
        kill_process(proc)
        ok, message = check_integrity(db)
        if not ok:
            return ScenarioResult(
                "SIGKILL during cleanup/VACUUM",
                trial + 1,
                len(pending),
                len(pending),
                0,
                0,
                f"integrity check failed: {message}",
            )
    with LocalBufferManager(db, exclusive=False) as store:
        held = set(store.record_ids("pending"))
    lost_locally = len(set(pending) - held)
    dup_before = _duplicates_received(cloud.url)
    _drain(db, cloud.url, device)
    result = _result(
        "SIGKILL during cleanup/VACUUM",
        cloud.url,
        device,
        sorted(held),
        kills,
        dup_before,
        "integrity check passed after every kill",
        check_gaps=False,
    )
    result.lost += lost_locally
    return result


def crash_matrix(cloud, work: Path, kills: int, seed: int = 0) -> list[ScenarioResult]:
    """``kills`` SIGKILLs spread over five phases of the edge's life."""
    rng = random.Random(seed)
    per = max(1, kills // 5)
    with FaultProxy(cloud.url) as proxy:
        nothing = lambda: None  # noqa: E731
        rows = [
            _kill_phase(
                "inside log_prediction",
                cloud,
                proxy,
                work,
                rng,
                per,
                proxy.pass_through,
                nothing,
                fps=0,
                window=(0.5, 1.2),
            ),
            _kill_phase(
                "request in flight / cloud committed, ack pending",
                cloud,
                proxy,
                work,
                rng,
                per,
                lambda: proxy.slow(0.25, health=False),
                nothing,
                fps=400,
                window=(0.6, 1.4),
            ),
            _kill_phase(
                "claiming and sending batches",
                cloud,
                proxy,
                work,
                rng,
                per,
                proxy.pass_through,
                nothing,
                fps=2000,
                window=(0.6, 1.4),
            ),
            _kill_phase(
                "during recovery of a backlog",
                cloud,
                proxy,
                work,
                rng,
                per,
                proxy.down,
                lambda: (time.sleep(0.9), proxy.pass_through()),
                fps=1500,
                window=(0.1, 0.9),
            ),
        ]
    rows.append(_cleanup_phase(cloud, work, rng, kills - 4 * per))
    return rows
