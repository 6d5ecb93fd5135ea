"""The reliability matrix (crash, fault, shutdown, corruption) at a reduced size; the full
200-kill run is `pytest -m slow` or `edgebuf reliability --kills 200`."""

from __future__ import annotations

import pytest

from cloud.testing import CloudServer
from edgebuf.lab import reliability


@pytest.fixture
def cloud(tmp_path):
    with CloudServer(f"sqlite:///{tmp_path}/cloud.db") as server:
        yield server


def assert_clean(rows):
    for row in rows:
        assert row.ok, row
        assert row.records > 0, row


def test_crash_matrix_small(cloud, tmp_path):
    rows = reliability.crash_matrix(cloud, tmp_path, kills=10, seed=3)
    assert len(rows) == 5 and sum(r.trials for r in rows) == 10
    assert_clean(rows)


def test_cloud_faults(cloud, tmp_path):
    rows = reliability.cloud_faults(cloud, tmp_path)
    assert_clean(rows)
    by_name = {r.scenario: r for r in rows}
    # the duplicate-makers really made duplicates, and none were stored twice
    assert by_name["acknowledgement dropped after commit"].resent > 0
    assert by_name["slow answers past the timeout"].resent > 0


def test_oversized_batches_split(tmp_path):
    assert_clean([reliability.oversized_batches(tmp_path)])


def test_sigterm(cloud, tmp_path):
    assert_clean([reliability.sigterm_shutdown(cloud, tmp_path, trials=2)])


def test_corruption_rows_salvage(tmp_path):
    rows = reliability.corruption(tmp_path)
    assert all(r.injected_loss and r.duplicated == 0 for r in rows)
    assert rows[1].lost < 300  # 8 overwritten pages hold far fewer than 300 of 3000 rows


@pytest.mark.slow
def test_full_crash_matrix_200_kills(cloud, tmp_path):
    rows = reliability.crash_matrix(cloud, tmp_path, kills=200, seed=0)
    assert sum(r.trials for r in rows) == 200
    assert_clean(rows)
