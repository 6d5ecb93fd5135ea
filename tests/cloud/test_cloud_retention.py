"""Retention (`EDGEBUF_RETENTION_DAYS`), late records, maintenance and restored databases.

Maintenance is driven with explicit `now` values (days ahead of the wall clock), which is
how a test sees weeks go by; ingest itself uses the wall clock and the cutoff that
maintenance recorded.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cloud.maintenance import Maintenance, partition_name
from cloud.retention import DAY, retention_cutoff
from cloud.settings import CloudSettings
from tests.cloud.test_cloud_rollups import brute_stats, derived, recounted, stored_rows


def _metric(api: Any, name: str) -> float:
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _post(
    api: Any, helpers: Any, device: str, seqs: range, ts: float, tag: str = "r"
) -> dict[str, Any]:
    records = [helpers.record(f"{tag}{seq}", seq, timestamp=ts + seq) for seq in seqs]
    answer = api.post("/log", json=helpers.batch(device, records))
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_late_record_past_retention_is_acknowledged_held_and_not_stored(
    make_cloud_client, helpers
):
    api = make_cloud_client(retention_days=3, maintenance_interval=0)
    now = time.time()
    assert _post(api, helpers, "cam-1", range(1, 4), now)["accepted"] == 3
    late = _post(api, helpers, "cam-1", range(4, 6), now - 10 * DAY)
    assert (late["accepted"], late["duplicates"]) == (2, 0)
    assert _metric(api, "edgebuf_cloud_records_expired_total") == 2
    assert api.get("/stats").json()["total_records"] == 3
    assert len(api.get("/predictions").json()["items"]) == 3
    mark = api.get("/devices/cam-1/watermark").json()
    assert (mark["contiguous_through"], mark["count"], mark["missing"]) == (5, 5, [])
    again = _post(api, helpers, "cam-1", range(4, 6), now - 10 * DAY)  # the edge retries
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert _metric(api, "edgebuf_cloud_records_expired_total") == 2
    mixed = [
        helpers.record("r6", 6, timestamp=now),
        helpers.record("r7", 7, timestamp=now - 9 * DAY),
    ]
    answer = api.post("/log", json=helpers.batch("cam-1", mixed)).json()
    assert (answer["accepted"], answer["duplicates"]) == (2, 0)
    assert api.get("/stats").json()["total_records"] == 4
    assert api.get("/devices/cam-1/gaps").json()["count"] == 7


def test_maintenance_expires_old_days_and_every_figure_stays_consistent(make_cloud_client, helpers):
    api = make_cloud_client(retention_days=7, maintenance_interval=0)
    state = api.app.state.cloud
    now = time.time()
    if not state.db.is_sqlite:  # the partitions those days would have had
        state.maintenance.run_once(now - 6 * DAY)
    _post(api, helpers, "cam-1", range(1, 11), now - 5 * DAY)
    _post(api, helpers, "cam-1", range(11, 21), now - 1 * DAY)
    _post(api, helpers, "cam-2", range(1, 11), now)
    assert api.get("/stats").json()["total_records"] == 30

    report = state.maintenance.run_once(now + 3 * DAY)
    assert report is not None and report.cutoff == retention_cutoff(now + 3 * DAY, 7)
    if not state.db.is_sqlite:
        assert partition_name(int((now - 5 * DAY) // DAY)) in report.partitions_dropped
    rows = stored_rows(api)
    assert sorted(r["seq"] for r in rows if r["device_id"] == "cam-1") == list(range(11, 21))
    assert api.get("/stats").json() == brute_stats(rows)
    window = {"since": now - 6 * DAY, "until": now + DAY}
    assert api.get("/stats", params=window).json() == brute_stats(rows, None, *window.values())
    ours, theirs = derived(api), recounted(api)
    for table in ("prediction_rollups", "detection_rollups", "seq_repeats"):
        assert ours[table] == theirs[table], table
    # The seqs stay held: reconciliation must not ask for expired records again.
    mark = api.get("/devices/cam-1/watermark").json()
    assert (mark["contiguous_through"], mark["count"], mark["missing"]) == (20, 20, [])
    assert api.get("/devices/cam-1/gaps").json()["gaps"] == []
    # A late record below the recorded cutoff is expired now (ingest uses that cutoff).
    late = _post(api, helpers, "cam-1", range(21, 22), now - 5 * DAY)
    assert late["accepted"] == 1
    assert api.get("/stats", params={"device_id": "cam-1"}).json()["total_records"] == 10
    assert api.get("/devices/cam-1/watermark").json()["max_seq"] == 21


def _storage(api: Any) -> int:
    """Bytes in use by the records (PostgreSQL: the partitions; SQLite: live pages)."""
    with api.app.state.cloud.db.engine.connect() as conn:
        if api.app.state.cloud.db.is_sqlite:
            pages = conn.execute(text("PRAGMA page_count")).scalar()
            free = conn.execute(text("PRAGMA freelist_count")).scalar()
            size = conn.execute(text("PRAGMA page_size")).scalar()
            return int((pages - free) * size)
        return int(
            conn.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
                    " WHERE inhparent = 'predictions'::regclass"
                )
            ).scalar()
        )


def test_storage_stays_flat_over_three_times_the_retention(make_cloud_client, helpers):
    days, per_day = 2, 300
    api = make_cloud_client(retention_days=days, maintenance_interval=0)
    maintenance = api.app.state.cloud.maintenance
    base = (time.time() // DAY + 10) * DAY  # days ahead: ingest's own clock never expires
    rows, sizes, seq = [], [], 0
    for day in range(3 * days):
        moment = base + day * DAY + 3600
        maintenance.run_once(moment)
        for chunk in range(0, per_day, 100):
            records = [
                helpers.record(f"d{day}-{i}", seq + i + 1, timestamp=moment + i * 60)
                for i in range(chunk, chunk + 100)
            ]
            assert api.post("/log", json=helpers.batch("cam-1", records)).json()["accepted"] == 100
        seq += per_day
        maintenance.run_once(moment + 1)
        rows.append(api.get("/stats").json()["total_records"])
        sizes.append(_storage(api))
    kept = (days + 1) * per_day  # the cutoff is a day boundary: N full days plus today
    assert rows == [min((d + 1) * per_day, kept) for d in range(3 * days)]
    assert max(sizes[days:]) <= 1.3 * sizes[days], sizes
    mark = api.get("/devices/cam-1/watermark").json()
    assert (mark["contiguous_through"], mark["count"]) == (3 * days * per_day,) * 2


def test_only_one_maintenance_runs_at_a_time(make_cloud_client):
    from cloud.db import Database

    api = make_cloud_client(retention_days=1, maintenance_interval=0)
    state = api.app.state.cloud
    other_db = Database(state.settings)
    try:
        other = Maintenance(other_db, state.settings)
        with state.maintenance._exclusive() as held:
            assert held is not None
            assert other.run_once() is None  # skipped: the lock is taken
        assert other.run_once() is not None
    finally:
        other_db.dispose()


def _copy_database(url: str, pg_admin: str | None, suffix: str) -> str:
    """A copy of the database at `url` (a file copy, or CREATE DATABASE … TEMPLATE)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        target = f"{parsed.database}.{suffix}"
        shutil.copyfile(parsed.database, target)
        return f"sqlite:///{target}"
    name = f"{parsed.database}_{suffix}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"')
    return parsed.set(database=name).render_as_string(hide_password=False)


def test_watermark_of_a_database_restored_from_an_older_copy(
    database_url, make_cloud_client, helpers, request
):
    from fastapi.testclient import TestClient

    from cloud.app import create_app

    admin = None if database_url.startswith("sqlite") else request.getfixturevalue("pg_admin")
    now = time.time()  # one timestamp per record, as a real edge re-sends it
    settings = CloudSettings(database_url=database_url, maintenance_interval=0)
    with TestClient(create_app(settings)) as api:
        _post(api, helpers, "cam-1", range(1, 11), now)
        _post(api, helpers, "cam-1", range(15, 18), now)
    backup = _copy_database(database_url, admin, "old")
    with TestClient(create_app(settings)) as api:
        _post(api, helpers, "cam-1", range(11, 15), now)
        _post(api, helpers, "cam-1", range(18, 40), now)
        assert api.get("/devices/cam-1/watermark").json()["contiguous_through"] == 39
    restored = CloudSettings(database_url=backup, maintenance_interval=0)
    with TestClient(create_app(restored)) as api:  # the newer records are gone, and so
        mark = api.get("/devices/cam-1/watermark").json()  # is their seq state
        assert mark == {
            "device_id": "cam-1",
            "contiguous_through": 10,
            "max_seq": 17,
            "count": 13,
            "missing": [[11, 14]],
            "complete": True,
        }
        assert api.get("/stats").json()["total_records"] == 13
        assert derived(api) == recounted(api)
        # The edge re-sends what the restored cloud lacks; it is stored once.
        again = _post(api, helpers, "cam-1", range(11, 40), now)
        assert again["accepted"] == 29 - 3
        assert api.get("/devices/cam-1/watermark").json()["contiguous_through"] == 39
    if admin is not None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{make_url(backup).database}" WITH (FORCE)')


@pytest.mark.parametrize("days", [0, -1])
def test_retention_days_must_be_positive(days):
    with pytest.raises(ValueError):
        CloudSettings(retention_days=days)
