"""The normal-mode sync window: the WAL is fsynced within ``sync_interval`` of a commit, cloud
up or down, by a thread of its own that sleeps while nothing is committed."""

from __future__ import annotations

import os
import time

import pytest

from edgebuf.clock import FakeClock
from edgebuf.config import load_settings
from edgebuf.errors import ConfigError
from edgebuf.syncer import WalSyncer


def test_policy_syncs_once_the_oldest_commit_has_waited_the_interval(tmp_path) -> None:
    clock = FakeClock()
    wal = tmp_path / "b.db-wal"
    wal.write_bytes(b"frames")
    s = WalSyncer(tmp_path / "b.db", clock, 0.5)
    assert s.due_in(clock.monotonic()) is None  # nothing committed: nothing due
    assert s.note_commit() is True  # the first commit since a sync wakes the thread
    assert s.note_commit() is False  # the next ones cost one attribute test
    clock.advance(0.3)
    assert s.due_in(clock.monotonic()) == pytest.approx(0.2)
    assert not s.run(clock.monotonic())
    clock.advance(0.2)
    assert s.run(clock.monotonic()) and s.syncs == 1
    assert s.due_in(clock.monotonic()) is None
    assert s.note_commit() is True  # after a sync, the next commit wakes it again


def test_the_client_syncs_during_an_outage_without_any_send(tmp_path) -> None:
    from edgebuf.client import EnhancedAsyncLoggingClient

    # Nothing listens on port 9: the cloud is down for the whole test.
    client = EnhancedAsyncLoggingClient(
        "http://127.0.0.1:9", tmp_path / "b.db", "cam-1", sync_interval=0.2,
        monitor_interval=60.0, max_retries=0,
    )  # fmt: skip
    with client:
        assert client.syncer is not None
        client.log_prediction({"detections": []})
        deadline = time.monotonic() + 5
        while client.syncer.syncs == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.syncer.syncs == 1
        time.sleep(0.5)
        assert client.syncer.syncs == 1  # idle: no more syncs
        for _ in range(3):
            client.log_prediction({"detections": []})
            time.sleep(0.35)
        assert client.syncer.syncs == 4
    assert os.path.exists(tmp_path / "b.db")


def test_a_hung_cloud_request_does_not_hold_the_sync_back(tmp_path) -> None:
    """The shipping thread may wait request_timeout in a send; the sync has its own thread."""
    import socket

    from edgebuf.client import EnhancedAsyncLoggingClient

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # connections complete into the backlog; nobody ever answers
    try:
        client = EnhancedAsyncLoggingClient(
            f"http://127.0.0.1:{hung.getsockname()[1]}", tmp_path / "b.db", "cam-1",
            sync_interval=0.2, batch_size=4, request_timeout=20.0, health_timeout=20.0,
        )  # fmt: skip
        client.start()
        try:
            for _ in range(8):
                client.log_prediction({"detections": []})
            time.sleep(0.3)  # the shipping thread is now inside a 20 s request
            before = client.syncer.syncs
            client.log_prediction({"detections": []})
            time.sleep(0.6)
            assert client.syncer.syncs > before
        finally:
            client.close(timeout=1.0)
    finally:
        hung.close()


def test_full_durability_has_no_syncer(make_client) -> None:
    assert make_client(durability="full").syncer is None


def test_sync_interval_setting(monkeypatch) -> None:
    assert load_settings().sync_interval == 1.0
    monkeypatch.setenv("EDGEBUF_SYNC_INTERVAL", "0.25")
    assert load_settings().sync_interval == 0.25
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("EDGEBUF_SYNC_INTERVAL", bad)
        with pytest.raises(ConfigError, match="sync_interval"):
            load_settings()
