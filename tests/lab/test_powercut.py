"""The power-cut filesystem itself: what a cut keeps and drops, as its docstring states.

These are what make the power-loss tests trustworthy: a harness that kept everything would
let every durability test pass, one that kept nothing would fail them all."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebuf.lab.powercut import PowerCutFS
from edgebuf.lab.powermodel import PowerCutState


def _write(path: Path, data: bytes, *, sync: bool) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- the model, no FUSE
def test_state_keeps_synced_blocks_and_drops_the_rest() -> None:
    s = PowerCutState()
    f = s.make("/f", 0o100600)
    f.write(b"a" * 5000, 0)
    s.fsync(f)
    f.write(b"b" * 10, 4090)  # across the block boundary, not synced
    f.truncate(4095)
    s.cut()
    g = s.lookup("/f")
    assert g.size == 5000 and g.read(6000, 0) == b"a" * 5000


def test_state_unlink_and_rename_need_a_directory_sync() -> None:
    s = PowerCutState(metadata="dir")
    f = s.make("/f", 0o100600)
    s.fsync(f)
    s.cut()
    with pytest.raises(OSError):
        s.lookup("/f")  # strict: the file's fsync did not record its name
    f = s.make("/f", 0o100600)
    s.fsyncdir(s.lookup("/"))
    s.rename("/f", "/g")
    s.cut()
    s.lookup("/f")
    with pytest.raises(OSError):
        s.lookup("/g")


# ---------------------------------------------------------------------- through FUSE
def test_unsynced_write_is_gone_and_synced_write_survives(powercut: PowerCutFS) -> None:
    root = powercut.path
    _write(root / "synced", b"kept", sync=True)
    _write(root / "unsynced", b"dropped", sync=False)
    fd = os.open(root / "synced", os.O_WRONLY | os.O_APPEND)
    os.write(fd, b" and not this")
    os.close(fd)
    powercut.cut()
    assert (root / "synced").read_bytes() == b"kept"
    # Its name was made durable by the fsync of "synced" (ext4-like), its data never was.
    assert not (root / "unsynced").exists() or (root / "unsynced").read_bytes() == b""


def test_fsync_of_any_handle_makes_the_file_durable(powercut: PowerCutFS) -> None:
    path = powercut.path / "f"
    writer = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(writer, b"written by one handle")
    other = os.open(path, os.O_RDONLY)
    os.fsync(other)  # what edgebuf's syncer relies on: an fsync from another descriptor
    os.write(writer, b", then more")
    os.close(writer)
    os.close(other)
    powercut.cut()
    assert path.read_bytes() == b"written by one handle"


def test_truncate_is_durable_only_at_the_next_fsync(powercut: PowerCutFS) -> None:
    path = powercut.path / "f"
    _write(path, b"0123456789", sync=True)
    os.truncate(path, 3)
    powercut.cut()
    assert path.read_bytes() == b"0123456789"
    os.truncate(path, 3)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    powercut.cut()
    assert path.read_bytes() == b"012"


def test_rename_and_unlink_semantics(powercut: PowerCutFS) -> None:
    root = powercut.path
    _write(root / "old", b"v1", sync=True)
    _fsync_dir(root)
    os.rename(root / "old", root / "new")
    os.unlink(root / "new")
    _write(root / "other", b"x", sync=False)
    powercut.cut()
    assert (root / "old").read_bytes() == b"v1"  # neither the rename nor the unlink survived
    assert not (root / "new").exists()

    os.rename(root / "old", root / "new")
    fd = os.open(root / "new", os.O_RDONLY)
    os.fsync(fd)  # ext4-like: the fsync of a renamed file records its new name
    os.close(fd)
    powercut.cut()
    assert not (root / "old").exists() and (root / "new").read_bytes() == b"v1"

    os.unlink(root / "new")
    _fsync_dir(root)
    powercut.cut()
    assert not (root / "new").exists()


def test_strict_metadata_needs_the_directory_fsync(powercut_strict: PowerCutFS) -> None:
    root = powercut_strict.path
    _write(root / "f", b"data", sync=True)
    powercut_strict.cut()
    assert not (root / "f").exists()
    _write(root / "f", b"data", sync=True)
    _fsync_dir(root)
    powercut_strict.cut()
    assert (root / "f").read_bytes() == b"data"


def test_a_writer_frozen_mid_call_is_killed_and_the_mount_comes_back(
    powercut: PowerCutFS,
) -> None:
    path = powercut.path / "f"
    code = (
        "import os,sys\n"
        f"fd = os.open({str(path)!r}, os.O_CREAT | os.O_WRONLY, 0o600)\n"
        "os.write(fd, b'x'); os.fsync(fd); print('synced', flush=True)\n"
        "while True: os.write(fd, b'y' * 4096)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "synced\n"
    time.sleep(0.2)
    powercut.cut(proc)
    assert proc.returncode == -9
    assert path.read_bytes() == b"x"
    assert os.path.ismount(powercut.path)


_SQLITE_VICTIM = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=" + sys.argv[2])
conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)")
print("ready", flush=True)
n = 0
while True:
    n += 1
    conn.execute("INSERT INTO t VALUES (?)", (n,))
    print(n, flush=True)
"""


def _sqlite_trial(fs: PowerCutFS, synchronous: str, seconds: float) -> tuple[int, int]:
    """(commits the victim saw return, rows found after the cut)."""
    db = fs.path / f"{synchronous}.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SQLITE_VICTIM, str(db), synchronous],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked: list[int] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.strip().isdigit():
                acked.append(int(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(seconds)
    fs.cut(proc)
    reader.join(5)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        has_table = conn.execute("SELECT count(*) FROM sqlite_master WHERE name='t'").fetchone()
        rows = {n for (n,) in conn.execute("SELECT n FROM t")} if has_table[0] else set()
    finally:
        conn.close()
    assert rows <= set(range(1, max(acked, default=0) + 2))  # nothing invented
    return len(acked), len(rows & set(acked))


def test_sqlite_synchronous_full_keeps_every_commit(powercut: PowerCutFS) -> None:
    acked, kept = _sqlite_trial(powercut, "FULL", 1.5)
    assert acked > 20
    assert kept == acked


def test_sqlite_synchronous_off_loses_commits(powercut: PowerCutFS) -> None:
    acked, kept = _sqlite_trial(powercut, "OFF", 1.5)
    assert acked > 20
    assert kept < acked
