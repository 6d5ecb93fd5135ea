"""A full disk: a clear edgebuf error, nothing buffered lost or corrupted, cleanup still works
on the full disk, and logging resumes when space returns. The buffer lives on a real
size-limited tmpfs mounted by the test (needs root, as in CI; skipped otherwise).
The volume is small but larger than SQLite's WAL checkpoint threshold (4 MiB), like any real
buffer volume; the reserve is sized above that threshold so the WAL can always be folded."""

from __future__ import annotations

import os
import subprocess

import pytest
from support import DET, drive

from edgebuf import DiskFullError
from edgebuf.store.repair import check_integrity

PAD = {"detections": DET["detections"], "pad": "z" * 400}


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {res.stderr}")
        pytest.skip(f"mounting a tmpfs needs root: {res.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_until_full(client) -> list[str]:
    ids = []
    with pytest.raises(DiskFullError, match="disk holding the buffer is full"):
        for i in range(100_000):
            ids.append(client.log_prediction(PAD, image_id=f"f{i}"))
    return ids


def test_disk_full_is_clear_and_loses_nothing_then_resumes(small_fs, make_client, clock):
    ballast = small_fs / "ballast"
    # The space that returns must hold the drain's WAL (up to SQLite's 4 MiB threshold) and
    # the delivered rows' index entries (schema 3 indexes them for reconciliation): 6 MiB.
    ballast.write_bytes(b"\0" * 6 * 1024 * 1024)
    client = make_client(db_path=small_fs / "b.db", reserve_bytes=6 * 1024 * 1024)
    assert client.reserve.held
    ids = fill_until_full(client)
    assert len(ids) > 10_000
    assert not client.reserve.held  # given up to keep going as long as possible
    # nothing buffered was lost, the file is intact
    assert client.store.counts()["pending"] == len(ids)
    assert client.store.metadata()["total_buffered"] == len(ids)
    ok, msg = check_integrity(small_fs / "b.db")
    assert ok, msg
    # a bulk call on a full disk stores nothing of itself
    with pytest.raises(DiskFullError):
        client.log_predictions([{"prediction": PAD}] * 50)
    assert client.store.counts()["pending"] == len(ids)
    # space returns -> logging resumes
    ballast.unlink()
    more = [client.log_prediction(PAD, image_id=f"g{i}") for i in range(20)]
    assert client.store.counts()["pending"] == len(ids) + len(more)
    # and everything is still deliverable, once each
    drive(client, clock)
    cloud = client.transport
    assert len(cloud.stored) == len(ids) + len(more)
    assert set(cloud.acknowledged_ids().values()) == {1}


def test_full_disk_deletes_delivered_rows_to_keep_logging(small_fs, make_client, clock):
    client = make_client(db_path=small_fs / "b.db", reserve_bytes=6 * 1024 * 1024)
    for i in range(6000):
        client.log_prediction(PAD, image_id=f"s{i}")
    drive(client, clock)  # all sent, none older than 7 days
    ids = fill_until_full(client)
    meta = client.store.metadata()
    assert meta["total_cleaned"] == 6000  # delivered rows made room, not pending ones
    assert client.store.counts() == {"pending": len(ids), "sending": 0, "sent": 0, "failed": 0}
    assert meta["evicted_capacity"] == 0
    ok, msg = check_integrity(small_fs / "b.db")
    assert ok, msg


def test_cleanup_works_when_something_else_filled_the_disk(small_fs, make_client, clock):
    client = make_client(db_path=small_fs / "b.db", reserve_bytes=6 * 1024 * 1024)
    for i in range(6000):
        client.log_prediction(PAD, image_id=f"s{i}")
    drive(client, clock)  # delivered
    pending = [client.log_prediction(PAD, image_id=f"p{i}") for i in range(100)]
    hog = small_fs / "other-process.log"  # another program fills the volume
    with open(hog, "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"x" * 65536)
            f.flush()
    clock.advance(8 * 86_400)
    report = client.cleanup()  # deletes on a full disk: the reserve is given up for it
    assert report["deleted"] == 6000
    assert client.store.counts() == {"pending": 100, "sending": 0, "sent": 0, "failed": 0}
    client.log_prediction(PAD, image_id="after-cleanup")  # room again
    ok, msg = check_integrity(small_fs / "b.db")
    assert ok, msg
    assert len(pending) == 100
