"""The SQLite store: identity, claim/ack/release transactions, restart recovery, errors."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from edgebuf import ConfigError, FakeClock, LocalBufferManager, StorageError
from edgebuf.records import prepare_record


def rec(i=0, **kw):
    return prepare_record({"detections": [], "i": i}, now=1000.0 + i, max_bytes=10_000, **kw)


@pytest.fixture
def store(tmp_path):
    s = LocalBufferManager(tmp_path / "b.db", clock=FakeClock())
    yield s
    s.close()


def test_ids_unique_and_sequences_monotonic_across_restarts(tmp_path):
    path = tmp_path / "b.db"
    with LocalBufferManager(path) as s:
        ids = s.add_predictions("cam", [rec(i) for i in range(5)])
        ids.append(s.add_prediction("cam", rec(5)))
        ids.append(s.add_prediction("other", rec(6)))
    with LocalBufferManager(path) as s:
        ids.append(s.add_prediction("cam", rec(7)))
        rows = (
            sqlite3.connect(path)
            .execute("SELECT device_id, seq FROM prediction_buffer ORDER BY id")
            .fetchall()
        )
    assert len(set(ids)) == 8 and all(len(i) == 32 for i in ids)
    assert [q for d, q in rows if d == "cam"] == [1, 2, 3, 4, 5, 6, 7]
    assert [q for d, q in rows if d == "other"] == [1]


def test_sequence_survives_cleanup_of_every_row(store):
    store.add_predictions("cam", [rec(i) for i in range(3)])
    with store.transaction() as conn:
        conn.execute("DELETE FROM prediction_buffer")
    store.add_prediction("cam", rec(9))
    assert store.metadata()["seq:cam"] == 4


def test_committed_rows_are_in_wal_mode_and_file_is_owner_only(tmp_path):
    path = tmp_path / "sub" / "b.db"
    with LocalBufferManager(path) as s:
        s.add_prediction("cam", rec())
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with LocalBufferManager(path, durability="full") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_claim_ack_release_fail_cycle_and_counters(store):
    store.add_predictions("cam", [rec(i) for i in range(10)])
    batch = store.claim(4)
    assert [r.seq for r in batch.records] == [1, 2, 3, 4]
    assert store.counts()["sending"] == 4
    assert store.mark_sent(batch.ids) == 4
    newest = store.claim(3, newest_first=True)
    assert [r.seq for r in newest.records] == [8, 9, 10]
    assert store.release(newest.ids, "HTTP 503") == 3
    b3 = store.claim(2)
    assert store.mark_failed(b3.ids, "HTTP 422: bad") == 2
    counts = store.counts()
    assert counts == {"pending": 4, "sending": 0, "sent": 4, "failed": 2}
    meta = store.metadata()
    assert (meta["total_buffered"], meta["total_sent"], meta["total_failed"]) == (10, 4, 2)
    row = store._conn.execute(
        "SELECT retry_count, last_error FROM prediction_buffer WHERE seq=8"
    ).fetchone()
    assert row == (1, "HTTP 503")
    assert store.requeue_failed() == 2
    assert store.counts()["failed"] == 0 and store.metadata()["total_requeued"] == 2


def test_settling_only_touches_rows_in_flight(store):
    store.add_predictions("cam", [rec(i) for i in range(3)])
    batch = store.claim(3)
    store.mark_sent(batch.ids)
    assert store.release(batch.ids, "late failure") == 0  # a late release cannot un-send
    assert store.counts()["sent"] == 3 and store.metadata()["total_sent"] == 3


def test_restart_returns_in_flight_rows_to_pending(tmp_path):
    path = tmp_path / "b.db"
    s = LocalBufferManager(path)
    s.add_predictions("cam", [rec(i) for i in range(6)])
    s.claim(4)
    s.close()  # like a crash: rows left 'sending'
    with LocalBufferManager(path) as s2:
        assert s2.recovered_in_flight == 4
        assert s2.counts() == {"pending": 6, "sending": 0, "sent": 0, "failed": 0}


def test_second_client_on_same_file_is_refused(tmp_path):
    path = tmp_path / "b.db"
    with LocalBufferManager(path):
        # In this process (a notebook cell run twice): the message says so, not "another process".
        with pytest.raises(StorageError, match="already open in this process"):
            LocalBufferManager(path)
        LocalBufferManager(path, exclusive=False).close()  # readers and tools are fine
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from edgebuf import LocalBufferManager; LocalBufferManager({str(path)!r})",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode != 0 and "in use by another edgebuf process" in other.stderr
    LocalBufferManager(path).close()  # released on close: the path can be opened again


def test_unwritable_path_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot be used"):
        LocalBufferManager(blocker / "b.db")


def test_not_a_database_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "b.db"
    path.write_bytes(b"this is not sqlite" * 500)
    from edgebuf import BufferCorruptError

    with pytest.raises(BufferCorruptError, match="edgebuf repair"):
        LocalBufferManager(path)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("database or disk is full", "DiskFullError"),
        ("database disk image is malformed", "BufferCorruptError"),
        ("file is not a database", "BufferCorruptError"),
        ("no such table: nope", "StorageError"),
    ],
)
def test_errors_without_an_error_code_are_translated_by_message(message, expected):
    # Python 3.10's sqlite3 gives errors no ``sqlite_errorcode`` (nor SQLITE_* names): the
    # message must still tell a full disk and a damaged file apart from other errors.
    from edgebuf.store import translate

    exc = sqlite3.OperationalError(message)
    assert getattr(exc, "sqlite_errorcode", None) is None
    assert type(translate(exc, "store the prediction")).__name__ == expected


def test_failed_transaction_stores_nothing(store):
    def boom(conn, records, live_after):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError):
        store.add_predictions("cam", [rec(1), rec(2)], before_commit=boom)
    assert store.counts()["pending"] == 0 and store.metadata()["total_buffered"] == 0
    assert "seq:cam" not in store.metadata()


def test_wire_json_embeds_prediction_verbatim(store):
    store.add_prediction("cam", rec(1, image_id='fr"ame', model_version="v"))
    import json

    wire = json.loads(store.claim(1).records[0].wire_json())
    assert wire["prediction"] == {"detections": [], "i": 1}
    assert wire["image_id"] == 'fr"ame' and wire["seq"] == 1 and wire["model_version"] == "v"


def test_live_bytes_tracks_inserts_and_deletes(store):
    from edgebuf.store.schema import ROW_OVERHEAD

    recs = [rec(i) for i in range(4)]
    store.add_predictions("cam", recs)
    expected = sum(len(r.prediction_json) + ROW_OVERHEAD for r in recs)
    assert store.metadata()["live_bytes"] == expected
    with store.transaction() as conn:
        store.delete_rows(conn, "seq <= 2", (), "total_cleaned")
    assert store.metadata()["live_bytes"] == expected - sum(
        len(r.prediction_json) + ROW_OVERHEAD for r in recs[:2]
    )
