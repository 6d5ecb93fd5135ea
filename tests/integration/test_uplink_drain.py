"""The adaptive backlog lane on a real link: a real client draining into the real cloud
through a ``FaultProxy`` shaped as a long, thin uplink.

The evidence is the proxy's request log (how many ``POST /log`` were open at once) and
the cloud's own read-back (every record exactly once). Nothing here is timed against a
target; ``bench/uplink.py`` measures throughput.
"""

from __future__ import annotations

import time

import pytest

from cloud.testing import CloudServer
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.lab.faults import FaultProxy
from edgebuf.lab.testing import FAST_SETTINGS
from edgebuf.lab.verify import audit

DET = {"detections": [{"class_name": "part", "confidence": 0.8, "box": [1, 2, 3, 4]}]}
SETTINGS = {**FAST_SETTINGS, "request_timeout": 10.0, "backfill_batch_size": 50, "max_retries": 5}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    server = CloudServer(f"sqlite:///{tmp_path_factory.mktemp('cloud')}/cloud.db")
    server.start()
    yield server
    server.close()


def peak_open(posts: list[dict]) -> int:
    edges = sorted([(r["t"], 1) for r in posts] + [(r["t_done"], -1) for r in posts])
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def backlog(tmp_path, device: str, n: int) -> tuple[str, list[str]]:
    """``n`` records committed with the client never started (found on disk at start)."""
    db = tmp_path / f"{device}.db"
    offline = EnhancedAsyncLoggingClient("http://127.0.0.1:9", db, device)
    ids = offline.log_predictions([{"prediction": DET, "image_id": f"f{i}"} for i in range(n)])
    offline.close(timeout=0.1)
    return str(db), ids


def drain(
    cloud, tmp_path, device: str, **settings
) -> tuple[EnhancedAsyncLoggingClient, FaultProxy, list[str]]:
    db, ids = backlog(tmp_path, device, 2_000)
    proxy = FaultProxy(cloud.url)
    proxy.link(bandwidth_bps=1_000_000, rtt=0.3)  # BDP ~300 KB: ~40 batches of 50
    client = EnhancedAsyncLoggingClient(proxy.url, db, device, **{**SETTINGS, **settings})
    return client, proxy, ids


def delivered_once(cloud, client, ids) -> None:
    assert client.flush(timeout=60), client.get_buffer_status()
    result = audit(cloud.url, client.device_id, ids)
    assert result.ok and result.stored == len(ids) and result.unexpected == 0, result


def test_the_adaptive_lane_fills_a_long_thin_pipe(cloud, tmp_path):
    client, proxy, ids = drain(cloud, tmp_path, "arc-grow", drain_concurrency=16)
    with proxy:
        client.start()
        try:
            delivered_once(cloud, client, ids)
            posts = proxy.log_requests()
            # the old lane kept exactly 2 in flight; this one grew past them
            assert peak_open(posts) > 4, peak_open(posts)
            assert client.recovery.limiter.increases >= 2
            assert client.recovery.limiter.limit <= 16
        finally:
            client.close(timeout=5)


def test_the_fixed_lane_keeps_its_number(cloud, tmp_path):
    client, proxy, ids = drain(
        cloud,
        tmp_path,
        "arc-fixed",
        drain_concurrency=2,
        drain_adaptive=False,
        batch_size=10_000,
        batch_timeout=3600,
    )
    with proxy:
        client.start()
        try:
            delivered_once(cloud, client, ids)
            assert peak_open(proxy.log_requests()) <= 2
        finally:
            client.close(timeout=5)


def test_503s_shrink_the_window_and_nothing_is_lost_or_doubled(cloud, tmp_path):
    client, proxy, ids = drain(cloud, tmp_path, "arc-503", drain_concurrency=16)
    with proxy:
        client.start()
        try:
            limiter = client.recovery.limiter
            deadline = time.monotonic() + 20
            while limiter.limit < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            grown = limiter.limit
            assert grown >= 8, grown
            proxy.status(503, retry_after=0.3)
            while limiter.decreases == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            # halved from wherever it had grown to (at most the max, 16)
            assert limiter.limit <= 16 // 2 and not limiter.slow_start
            proxy.pass_through()
            delivered_once(cloud, client, ids)
            assert proxy.counters()["by_outcome"].get("injected", 0) >= 1
        finally:
            client.close(timeout=5)
