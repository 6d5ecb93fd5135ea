"""Counters folded after the commit (schema 2): the insert commits the row alone and
``fold`` adds it to total_buffered, live_bytes and the sequence high-water marks later.
Each test tries a way those counters could drift - a crash before the fold, a delete of
rows never folded, SQLite reusing the rowids of deleted newest rows, an older buffer - and
checks them against the rows themselves."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from edgebuf import LocalBufferManager
from edgebuf.records import prepare_record
from edgebuf.store import effective_metadata
from edgebuf.store.schema import COUNTED_THROUGH, ROW_OVERHEAD


def rec(i=0):
    return prepare_record({"detections": [], "i": i}, now=1000.0 + i, max_bytes=10_000)


def from_rows(path) -> dict[str, int]:
    """What the counters must say about a buffer nothing was ever deleted from."""
    conn = sqlite3.connect(path)
    try:
        n, chars, top = conn.execute(
            "SELECT count(*), coalesce(sum(length(prediction_data)), 0), coalesce(max(seq), 0)"
            " FROM prediction_buffer"
        ).fetchone()
    finally:
        conn.close()
    return {"total_buffered": n, "live_bytes": chars + n * ROW_OVERHEAD, "seq:cam": top}


def folded_on_disk(path) -> dict[str, float]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM buffer_metadata"))
    finally:
        conn.close()


def test_insert_writes_no_counter_and_readers_still_see_exact_counts(tmp_path):
    path = tmp_path / "b.db"
    with LocalBufferManager(path) as store:
        store.add_predictions("cam", [rec(i) for i in range(10)])
        store.add_prediction("cam", rec(10))
        assert folded_on_disk(path)["total_buffered"] == 0  # the commits wrote rows only
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # another connection
        seen = effective_metadata(reader)
        assert not reader.in_transaction  # its read snapshot is released again
        reader.close()
        assert {k: seen[k] for k in ("total_buffered", "live_bytes", "seq:cam")} == from_rows(path)
        assert store.fold() == 11 and store.fold() == 0
        assert folded_on_disk(path)[COUNTED_THROUGH] == 11
        assert folded_on_disk(path)["total_buffered"] == 11


def test_sigkill_before_any_fold_loses_no_count_and_no_sequence(tmp_path):
    path = tmp_path / "b.db"
    writer = textwrap.dedent(f"""
        import sys
        from edgebuf import LocalBufferManager
        from edgebuf.records import prepare_record
        store = LocalBufferManager({str(path)!r})
        for i in range(300):
            store.add_prediction("cam", prepare_record({{"i": i}}, now=1.0, max_bytes=10_000))
        print("committed", flush=True)
        sys.stdin.read()  # wait to be killed, counters never folded
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "committed"
        assert folded_on_disk(path)["total_buffered"] == 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with LocalBufferManager(path) as store:
        meta = store.metadata()
        assert {k: meta[k] for k in ("total_buffered", "live_bytes", "seq:cam")} == from_rows(path)
        store.add_prediction("cam", rec(1))  # the sequence goes on where the killed one stopped
        assert (
            sqlite3.connect(path)
            .execute("SELECT seq FROM prediction_buffer ORDER BY id DESC LIMIT 1")
            .fetchone()[0]
            == 301
        )
        assert store.metadata()["total_buffered"] == 301


@pytest.mark.parametrize("exclusive", [True, False])
def test_deleting_the_newest_rows_then_inserting_keeps_counts_exact(tmp_path, exclusive):
    """SQLite gives a new row max(id) + 1, so deleting the newest rows hands their ids out
    again: those rows must still be counted once, not skipped as already folded."""
    path = tmp_path / "b.db"
    with LocalBufferManager(path, exclusive=exclusive) as store:
        recs = [rec(i) for i in range(6)]
        store.add_predictions("cam", recs)
        store.fold()
        store.add_predictions("cam", [rec(6), rec(7)])  # unfolded, newest
        with store.transaction() as conn:  # e.g. the overflow policy evicting the newest
            assert store.delete_rows(conn, "seq >= 5", (), "evicted_capacity") == 4
        store.add_predictions("cam", [rec(8), rec(9), rec(10)])  # get ids 5, 6, 7 again
        meta = store.metadata()
        live = (
            sqlite3.connect(path)
            .execute(
                "SELECT sum(length(prediction_data)) + count(*) * ? FROM prediction_buffer",
                (ROW_OVERHEAD,),
            )
            .fetchone()[0]
        )
        assert meta["total_buffered"] == 11 and meta["evicted_capacity"] == 4
        assert meta["live_bytes"] == live
        assert meta["seq:cam"] == 11
        seqs = [
            s
            for (s,) in sqlite3.connect(path).execute(
                "SELECT seq FROM prediction_buffer ORDER BY id"
            )
        ]
        assert seqs == [1, 2, 3, 4, 9, 10, 11]  # sequences never reused
    with LocalBufferManager(path) as store:  # and again after a restart
        assert store.metadata()["total_buffered"] == 11
        assert store.metadata()["live_bytes"] == live


def test_a_schema_1_buffer_keeps_its_counters(tmp_path):
    """Schema 1 counted each row in its own commit: opening it must not count them again."""
    path = tmp_path / "b.db"
    with LocalBufferManager(path) as store:
        store.add_predictions("cam", [rec(i) for i in range(5)])
    conn = sqlite3.connect(path)  # make it what schema 1 left on disk
    conn.execute("DELETE FROM buffer_metadata WHERE key = ?", (COUNTED_THROUGH,))
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with LocalBufferManager(path) as store:
        assert store.metadata()["total_buffered"] == 5
        store.add_prediction("cam", rec(5))
        assert store.metadata()["total_buffered"] == 6 and store.metadata()["seq:cam"] == 6
    assert folded_on_disk(path)[COUNTED_THROUGH] == 6


def test_folding_in_steps_counts_every_row_once(tmp_path):
    path = tmp_path / "b.db"
    with LocalBufferManager(path) as store:
        store.add_predictions("cam", [rec(i) for i in range(25)])
        assert store.fold(limit=10) == 10 and folded_on_disk(path)[COUNTED_THROUGH] == 10
        with store.transaction() as conn:  # a hole
            conn.execute("DELETE FROM prediction_buffer WHERE id BETWEEN 12 AND 20")
        assert store.fold_in_steps(step=4) == 6  # 11, then 21..25 past the hole
        assert store.fold_in_steps(step=4) == 0
        meta = folded_on_disk(path)
        assert (
            meta["total_buffered"] == 16 and meta[COUNTED_THROUGH] == 25 and meta["seq:cam"] == 25
        )


def test_threads_logging_at_once_get_unique_gapless_sequences(tmp_path):
    """The one-row fast path reads the remembered sequence and commits under one lock:
    eight threads logging (single and bulk calls mixed) must never share a number."""
    import threading

    from edgebuf import EnhancedAsyncLoggingClient

    client = EnhancedAsyncLoggingClient("http://127.0.0.1:9", tmp_path / "b.db", "cam")
    ids: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        mine = []
        for i in range(150):
            if i % 10 == 0:
                mine += client.log_predictions(
                    [{"prediction": {"w": w, "i": i, "k": k}} for k in range(5)]
                )
            else:
                mine.append(client.log_prediction({"w": w, "i": i}))
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    meta = client.store.metadata()
    client.close(timeout=0)
    expected = 8 * (135 + 15 * 5)
    assert len(ids) == len(set(ids)) == expected
    seqs = sorted(
        s
        for (s,) in sqlite3.connect(tmp_path / "b.db").execute("SELECT seq FROM prediction_buffer")
    )
    assert seqs == list(range(1, expected + 1))
    assert meta["total_buffered"] == expected and meta["seq:cam"] == expected
    assert from_rows(tmp_path / "b.db") == {
        "total_buffered": expected,
        "live_bytes": meta["live_bytes"],
        "seq:cam": expected,
    }
