"""The normal-mode sync window as policy, on a fake clock: the shipping loop wakes to fsync
the WAL within ``sync_interval`` of a commit, cloud up or down, and sleeps when idle."""

from __future__ import annotations

import pytest

from edgebuf.config import load_settings
from edgebuf.errors import ConfigError


def test_sync_is_due_within_the_interval_while_the_cloud_is_down(make_client, clock) -> None:
    client = make_client(sync_interval=0.5)
    client.connectivity.mark_down("test: outage")
    client.log_prediction({"detections": []})
    syncer = client.shipper.syncer
    assert syncer is not None
    delay = client.shipper.run_once()
    assert delay is not None and delay <= 0.5  # it does not sleep until the 30 s maintenance
    clock.advance(0.5)
    client.shipper.run_once()
    assert syncer.syncs == 1
    # idle: nothing committed since, so no sync is due and the loop may sleep long
    assert syncer.due_in(clock.monotonic()) is None
    assert client.shipper.run_once() > 1.0
    # every later commit is synced again within the interval, outage or not
    for _ in range(3):
        client.log_prediction({"detections": []})
        assert client.shipper.run_once() <= 0.5
        clock.advance(0.5)
        client.shipper.run_once()
    assert syncer.syncs == 4


def test_a_commit_wakes_the_sleeping_loop_once_per_interval(make_client) -> None:
    client = make_client()
    client.connectivity.mark_down("test: outage")
    shipper = client.shipper
    for _ in range(100):  # past the batch threshold, which wakes it only once
        client.log_prediction({"detections": []})
    shipper._wake.clear()
    shipper.run_once()  # not due yet: the commits are already noted, no new wake
    client.log_prediction({"detections": []})
    assert not shipper._wake.is_set()
    shipper.syncer.run(shipper.clock.monotonic() + 10)  # synced: the next commit wakes it
    client.log_prediction({"detections": []})
    assert shipper._wake.is_set()


def test_full_durability_has_no_syncer(make_client) -> None:
    assert make_client(durability="full").shipper.syncer is None


def test_sync_interval_setting(monkeypatch) -> None:
    assert load_settings().sync_interval == 1.0
    monkeypatch.setenv("EDGEBUF_SYNC_INTERVAL", "0.25")
    assert load_settings().sync_interval == 0.25
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("EDGEBUF_SYNC_INTERVAL", bad)
        with pytest.raises(ConfigError, match="sync_interval"):
            load_settings()
