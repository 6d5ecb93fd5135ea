"""Damaged buffer files: the client never crash-loops at start-up; repair keeps the damaged
file aside, salvages every readable row and its counts match what was written."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys

import pytest

from edgebuf import BufferCorruptError, EnhancedAsyncLoggingClient, LocalBufferManager
from edgebuf.records import prepare_record
from edgebuf.store.repair import repair_db

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


_KILLER = """
import os, signal, shutil, sys
import edgebuf.store.repair as repair

step, path = sys.argv[1], sys.argv[2]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)


def after(obj, name, nth=1):
    real, calls = getattr(obj, name), [0]

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            die()
        return result

    setattr(obj, name, wrapper)


if step == "first-copy":  # the first file copy of the repair (old code: after the move aside)
    real_copy = shutil.copyfile
    shutil.copyfile = lambda *a, **k: (real_copy(*a, **k), die())
elif step == "marker-written":
    after(repair, "replace_durably", 1)
elif step == "salvaged":
    after(repair, "salvage_into", 1)
elif step == "installed":
    after(repair, "replace_durably", 2)
repair.repair_db(path)
"""


def _damaged(path):
    write_buffer(path, 500)
    data = bytearray(path.read_bytes())
    data[10 * 4096 : 12 * 4096] = b"\x00" * 8192
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("step", ["first-copy", "marker-written", "salvaged", "installed"])
def test_sigkill_at_each_step_of_repair_loses_nothing_and_sequences_continue(tmp_path, step):
    """A repair killed at any step is completed by the next start (the client's own
    auto-repair): the same rows as an uninterrupted repair, and the next record's sequence
    number continues past every one written before the damage."""
    reference = tmp_path / "ref" / "b.db"
    reference.parent.mkdir()
    _damaged(reference)
    expected = repair_db(reference)["salvaged"]
    path = tmp_path / "b.db"
    _damaged(path)
    proc = subprocess.run([sys.executable, "-c", _KILLER, step, str(path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL  # it died at the step, not before or after
    with EnhancedAsyncLoggingClient(
        "http://127.0.0.1:9", path, "cam", transport=_Nowhere()
    ) as client:
        counts = client.store.counts()
        assert sum(counts.values()) == expected, (client.repair_report, counts)
        client.log_prediction({"after": "repair"})
        assert client.store.metadata()["seq:cam"] == 501  # 500 were written before
    assert not (tmp_path / "b.db.repair").exists()
    assert list(tmp_path.glob("b.db.damaged-*")), "the damaged copy is kept"


class _Nowhere:
    def send(self, body):
        from edgebuf import SendResult

        return SendResult(None, error="offline")

    def probe(self):
        return False

    def close(self):
        pass
