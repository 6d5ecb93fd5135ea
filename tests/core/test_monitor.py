"""BufferMonitor: full status, readable print, pandas export, repair of damaged files."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from support import DET, drive

from edgebuf import BufferMonitor, LocalBufferManager
from edgebuf.records import prepare_record
from edgebuf.store.repair import repair_db


def test_full_status_is_actionable(make_client, clock, cloud):
    client = make_client(capacity_bytes=1_000_000)
    for i in range(32):
        client.log_prediction(DET, image_id=f"f{i}")
    drive(client, clock, until=lambda: client.store.counts()["sent"] >= 32)
    for i in range(32, 40):
        client.log_prediction(DET, image_id=f"f{i}")
    clock.advance(12.5)  # past the batch timeout; the loop has not run since
    status = client.get_buffer_status()
    assert status["counts"] == {"pending": 8, "sending": 0, "sent": 32, "failed": 0}
    assert status["backlog"] == 8
    assert status["oldest_pending_age_s"] == pytest.approx(12.5, abs=0.01)
    assert status["device_id"] == "cam-1"
    assert 0 < status["database"]["capacity_used_pct"] < 1
    assert status["disk"]["free_bytes"] > 0
    assert status["connectivity"]["state"] == "up"
    assert status["delivery"]["send_rate_per_s"] > 0
    assert status["delivery"]["eta_drain_s"] is not None
    assert status["counters"]["total_buffered"] == 40
    assert status["sequences"] == {"cam-1": 40}


def test_print_status(make_client, clock, capsys):
    client = make_client()
    client.log_prediction(DET)
    client.monitor.print_status()
    out = capsys.readouterr().out
    assert "pending 1" in out and "connectivity" in out and "capacity" in out


def test_export_stats_dataframes_and_files(make_client, clock, cloud, tmp_path):
    client = make_client()
    for i in range(64):
        client.log_prediction(DET, image_id=f"f{i}")
        clock.advance(0.5)
    drive(client, clock)
    for i in range(5):
        client.log_prediction(DET, image_id=f"p{i}")
    result = client.monitor.export_stats(tmp_path / "out", "csv")
    rec = result.records
    assert len(rec) == 69
    assert str(rec["timestamp"].dtype) == "datetime64[ns, UTC]" or "UTC" in str(
        rec["timestamp"].dtype
    )
    assert rec["sent_at"].notna().sum() == 64
    assert (rec.loc[rec.status == "sent", "delivery_latency_s"] >= 0).all()
    assert rec.loc[rec.status == "pending", "delivery_latency_s"].isna().all()
    backlog = result.backlog
    assert isinstance(backlog.index, pd.DatetimeIndex)
    assert backlog["backlog"].iloc[-1] == 5 and backlog["sent_total"].iloc[-1] == 64
    assert backlog["backlog"].max() >= 32
    assert sorted(p.split("/")[-1] for p in result.files) == [
        "backlog.csv",
        "dropped.csv",
        "dropped_summary.csv",
        "records.csv",
    ]
    assert len(pd.read_csv(tmp_path / "out" / "records.csv")) == 69
    pq = client.monitor.export_stats(tmp_path / "pq", "parquet")
    assert len(pd.read_parquet(pq.files[0])) == 69


def test_monitor_on_a_file_without_client(tmp_path):
    path = tmp_path / "b.db"
    with LocalBufferManager(path) as s:
        s.add_prediction("cam", prepare_record(DET, now=1.0, max_bytes=10_000))
    with BufferMonitor(path) as mon:
        status = mon.get_full_status()
    assert status["counts"]["pending"] == 1 and status["connectivity"]["state"] == "not running"


def write_rows(path, n):
    with LocalBufferManager(path) as s:
        s.add_predictions(
            "cam",
            [
                prepare_record({"i": i, "pad": "y" * 300}, now=float(i), max_bytes=10_000)
                for i in range(n)
            ],
        )
        batch = s.claim(10)
        s.mark_sent(batch.ids)
        s.claim(5)  # left in flight
        s._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_repair_of_a_healthy_file_changes_nothing(tmp_path):
    path = tmp_path / "b.db"
    write_rows(path, 50)
    assert repair_db(path)["repaired"] is False
    assert not list(tmp_path.glob("*.damaged-*"))


def test_repair_salvages_readable_rows_of_a_damaged_file(tmp_path):
    path = tmp_path / "b.db"
    write_rows(path, 2000)
    data = bytearray(path.read_bytes())
    page = 4096
    # smash a run of pages in the middle of the table (not page 1: the header survives)
    for p in range(60, 66):
        data[p * page : (p + 1) * page] = b"\xff" * page
    path.write_bytes(bytes(data))
    report = BufferMonitor(path).repair_db()
    assert report["repaired"] is True
    assert list(tmp_path.glob("b.db.damaged-*"))  # the damaged file is kept aside
    salvaged = report["salvaged"]
    assert 0 < salvaged < 2000
    assert report["expected_rows"] == 2000
    assert report["missing_rows"] == 2000 - salvaged
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM prediction_buffer").fetchone()[0] == salvaged
    assert (
        conn.execute("SELECT count(*) FROM prediction_buffer WHERE status='sending'").fetchone()[0]
        == 0
    )
    # sequences never go backwards after a repair
    with LocalBufferManager(path) as s:
        s.add_prediction("cam", prepare_record({}, now=1.0, max_bytes=100))
        assert s.metadata()["seq:cam"] == 2001


def test_repair_of_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "b.db"
    path.write_bytes(b"garbage" * 1000)
    report = repair_db(path)
    assert report["repaired"] is True and report["salvaged"] == 0
    with LocalBufferManager(path) as s:
        assert s.counts()["pending"] == 0
