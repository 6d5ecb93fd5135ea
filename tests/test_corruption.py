"""Damaged buffer files: the client never crash-loops at start-up; repair keeps the damaged
file aside, salvages every readable row and its counts match what was written."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from edgebuf import BufferCorruptError, EnhancedAsyncLoggingClient, LocalBufferManager
from edgebuf.store.repair import repair_db
from edgebuf.records import prepare_record

N = 3000


def write_buffer(path, n=N) -> dict[str, dict]:
    """n records, some sent, checkpointed into the main file; returns record_id -> payload."""
    written = {}
    with LocalBufferManager(path) as s:
        preds = [{"frame": i, "detections": [{"c": i % 7}], "pad": "p" * 200} for i in range(n)]
        ids = s.add_predictions(
            "cam", [prepare_record(p, now=1.0 + i, max_bytes=10_000) for i, p in enumerate(preds)]
        )
        written = dict(zip(ids, preds))
        s.mark_sent(s.claim(500).ids)
        s.checkpoint("TRUNCATE")
    return written


def salvaged_rows(path) -> dict[str, dict]:
    import json

    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT record_id, prediction_data FROM prediction_buffer").fetchall()
    conn.close()
    return {rid: json.loads(data) for rid, data in rows}


def check_against_written(path, report, written):
    rows = salvaged_rows(path)
    assert report["salvaged"] == len(rows)
    for rid, payload in rows.items():  # nothing invented, nothing altered
        assert written[rid] == payload
    if report["expected_rows"] is not None:
        assert report["expected_rows"] == len(written)
        assert report["missing_rows"] == len(written) - len(rows)
    assert list(path.parent.glob(f"{path.name}.damaged-*")), "damaged file must be kept"


def test_truncated_file(tmp_path):
    path = tmp_path / "b.db"
    written = write_buffer(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    report = repair_db(path)
    assert report["repaired"]
    check_against_written(path, report, written)
    assert 0 < report["salvaged"] < N


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flipped_bytes_in_random_pages(tmp_path, seed):
    path = tmp_path / "b.db"
    written = write_buffer(path)
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    pages = len(data) // 4096
    for page in rng.sample(range(2, pages), 8):
        for _ in range(40):
            data[page * 4096 + rng.randrange(4096)] ^= 0xFF
    path.write_bytes(bytes(data))
    report = repair_db(path)
    if not report["repaired"]:  # the flips happened to land in free space
        assert report["integrity"] == "ok"
        return
    check_against_written(path, report, written)
    assert report["salvaged"] > N // 2


def test_not_sqlite_at_all_client_starts_anyway(tmp_path):
    path = tmp_path / "b.db"
    path.write_bytes(os.urandom(64 * 1024))
    client = EnhancedAsyncLoggingClient("http://127.0.0.1:9", path, "cam")
    try:
        assert client.repair_report["repaired"] and client.repair_report["salvaged"] == 0
        client.log_prediction({"detections": []})
        assert client.store.counts()["pending"] == 1
    finally:
        client.close()


def test_corrupt_file_without_auto_repair_is_a_clear_error(tmp_path):
    path = tmp_path / "b.db"
    path.write_bytes(b"\x00garbage" * 5000)
    with pytest.raises(BufferCorruptError, match="edgebuf repair"):
        EnhancedAsyncLoggingClient("http://127.0.0.1:9", path, "cam", auto_repair=False)


def test_client_restart_after_page_damage_salvages_and_keeps_logging(tmp_path):
    path = tmp_path / "b.db"
    written = write_buffer(path)
    data = bytearray(path.read_bytes())
    data[30 * 4096 : 34 * 4096] = b"\xa5" * 4 * 4096
    path.write_bytes(bytes(data))
    client = EnhancedAsyncLoggingClient("http://127.0.0.1:9", path, "cam")
    try:
        report = client.repair_report
        assert report and report["repaired"]
        check_against_written(path, report, written)
        client.log_prediction({"detections": []})
        assert client.store.metadata()["seq:cam"] == N + 1  # sequences never go back
    finally:
        client.close()


def _kill_writer_leaving_a_wal(path) -> int:
    """A writer process commits records and is SIGKILLed, leaving them only in the WAL."""
    code = (
        "import sys, time\n"
        "from edgebuf import LocalBufferManager\n"
        "from edgebuf.records import prepare_record\n"
        f"s = LocalBufferManager({str(path)!r})\n"
        "s._conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "s.add_predictions('cam', [prepare_record({'i': i}, now=1.0, max_bytes=99) "
        "for i in range(200)])\n"
        "print('committed', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "committed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return 200


def test_deleted_wal_loses_only_its_transactions_and_client_starts(tmp_path):
    path = tmp_path / "b.db"
    write_buffer(path, 100)
    _kill_writer_leaving_a_wal(path)
    os.remove(f"{path}-wal")
    with contextlib_suppress_missing(f"{path}-shm"):
        pass
    client = EnhancedAsyncLoggingClient("http://127.0.0.1:9", path, "cam")
    try:
        # the 100 checkpointed rows survive; the 200 that lived only in the WAL are gone
        # (a documented limit: a deleted WAL takes its transactions with it)
        assert sum(client.store.counts().values()) == 100
        client.log_prediction({"detections": []})
    finally:
        client.close()


def test_damaged_wal_keeps_the_intact_prefix_and_client_starts(tmp_path):
    path = tmp_path / "b.db"
    write_buffer(path, 100)
    _kill_writer_leaving_a_wal(path)
    wal = f"{path}-wal"
    data = bytearray(open(wal, "rb").read())
    mid = len(data) // 2
    data[mid : mid + 64] = os.urandom(64)
    open(wal, "wb").write(bytes(data))
    client = EnhancedAsyncLoggingClient("http://127.0.0.1:9", path, "cam")
    try:
        total = sum(client.store.counts().values())
        assert 100 <= total <= 300  # frames after the damaged one are ignored by SQLite
        client.log_prediction({"detections": []})
    finally:
        client.close()


class contextlib_suppress_missing:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __exit__(self, *exc):
        return False


def test_sigkill_during_repair_then_repair_again(tmp_path):
    """Repair is restartable: a second run on whatever the first left behind succeeds."""
    path = tmp_path / "b.db"
    write_buffer(path, 500)
    data = bytearray(path.read_bytes())
    data[10 * 4096 : 12 * 4096] = b"\x00" * 8192
    path.write_bytes(bytes(data))
    code = f"from edgebuf.store.repair import repair_db; repair_db({str(path)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = repair_db(path)
    ok = sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0]
    assert ok == "ok", report
