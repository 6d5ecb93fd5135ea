"""Power cuts on the power-cut filesystem (``edgebuf.lab.powerloss``): what an acknowledgement
is worth when the power goes, on the edge and on the cloud.

CI-sized trial counts here; ``pytest -m slow tests/lab`` runs every row 100 times."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from edgebuf.lab.powercut import PowerCutFS
from edgebuf.lab.powerloss import (
    CAMERA_FPS,
    cleanup_duration,
    cleanup_trial,
    cloud_trial,
    edge_trial,
)
from edgebuf.lab.powerrepair import BEFORE_MARKER, COMPLETE, RESUMED, repair_duration, repair_trial
from edgebuf.lab.powerreport import format_rows, normal_bound, power_loss_rows


def test_edge_full_loses_no_acknowledged_record(powercut: PowerCutFS) -> None:
    rng = random.Random(1)
    for seed in range(3):
        t = edge_trial(powercut, durability="full", fps=0, seconds=rng.uniform(0.3, 1.2),
                       name="full", seed=seed)  # fmt: skip
        assert t.acked > 20
        assert t.lost == 0, t


def test_edge_normal_loses_at_most_the_sync_window_during_an_outage(
    powercut: PowerCutFS,
) -> None:
    # Today's code (no syncer) loses every record after the first second of the outage.
    rng = random.Random(2)
    for seed in range(2):
        t = edge_trial(powercut, durability="normal", fps=CAMERA_FPS,
                       seconds=rng.uniform(4.0, 5.0), name="normal", seed=seed)  # fmt: skip
        assert t.acked > 2 * CAMERA_FPS
        assert t.lost <= normal_bound(t, 1.0), t


def test_edge_normal_loses_at_most_the_sync_window_while_shipping(
    powercut: PowerCutFS, tmp_path: Path
) -> None:
    from cloud.testing import CloudServer

    rng = random.Random(3)
    with CloudServer(f"sqlite:///{tmp_path}/cloud.db") as cloud:
        for seed in range(2):
            t = edge_trial(powercut, durability="normal", fps=CAMERA_FPS,
                           seconds=rng.uniform(2.5, 3.5), endpoint=cloud.url,
                           device=f"ship-{seed}", name="ship", seed=seed)  # fmt: skip
            assert t.acked > 2 * CAMERA_FPS
            assert t.lost <= normal_bound(t, 1.0), t


def test_cloud_default_loses_no_acknowledged_record(powercut: PowerCutFS, tmp_path: Path) -> None:
    # Today's default (synchronous=NORMAL) answers 200 before the commit is on disk.
    rng = random.Random(4)
    for seed in range(2):
        t = cloud_trial(powercut, tmp_path, seconds=rng.uniform(1.5, 2.5), seed=seed)
        assert t.acked > 100, t
        assert t.lost == 0, t


def test_cloud_opt_out_is_honoured(powercut: PowerCutFS, tmp_path: Path) -> None:
    """EDGEBUF_DURABLE_ACK=false restores the old trade (NORMAL): the harness sees it lose."""
    lost = 0
    for seed in range(3):
        t = cloud_trial(powercut, tmp_path, seconds=2.0, seed=seed,
                        env={"EDGEBUF_DURABLE_ACK": "false"})  # fmt: skip
        lost += t.lost
        if lost:
            break
    assert lost > 0


def test_cut_during_cleanup_and_vacuum_keeps_the_file_and_every_unsent_row(
    powercut: PowerCutFS,
) -> None:
    rng = random.Random(5)
    took = cleanup_duration(powercut)
    mid = 0
    for seed in range(4):
        t = cleanup_trial(powercut, seed=seed, rng=rng, within=took)  # raises if damaged
        assert t.lost == 0, t
        mid += not t.extra
    assert mid >= 1  # at least one cut landed inside the run


def test_cut_during_repair_keeps_every_row_the_repair_salvages(powercut: PowerCutFS) -> None:
    # edgebuf repair of a damaged buffer, cut mid-run; the reboot's open_buffer resumes or
    # redoes it and must end where an uncut repair of the same damaged bytes ends.
    rng = random.Random(6)
    took = repair_duration(powercut)
    phases = []
    for seed in range(10):  # 4 cuts, more until one left the marker (the resume path)
        # cuts in the first 60 % of the run: most land between the marker and the rename
        t = repair_trial(powercut, seed=seed, rng=rng, within=0.6 * took)  # raises if damaged
        assert t.acked > 2000, t  # most of the 2,500 unsent rows survive the damage itself
        assert t.lost == 0, t
        phases.append(t.extra)
        if len(phases) >= 4 and RESUMED in phases:
            break
    assert RESUMED in phases, phases
    assert set(phases) <= {BEFORE_MARKER, RESUMED, COMPLETE}


@pytest.mark.slow
def test_power_loss_rows_100_trials() -> None:
    rows = power_loss_rows(trials=100, seed=11)
    print("\n" + format_rows(rows))
    assert all(r.ok for r in rows), format_rows(rows)
