"""Real network faults between a real client and a real cloud process (``FaultProxy``).

For every mode: the fault really happened (proxy counters, the client's errors, the cloud's
duplicate counts), and after ``pass`` and a flush every logged record is stored exactly once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from cloud.testing import CloudServer
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.lab.faults import EventLog, Fault, FaultProxy, kill_process
from edgebuf.lab.testing import FAST_SETTINGS
from edgebuf.lab.verify import audit

FAST = {
    **FAST_SETTINGS,
    "drain_concurrency": 1,  # one request at a time: these tests time individual requests
    "request_timeout": 1.0,
}
DET = {"detections": [{"class_name": "part", "confidence": 0.8, "box": [1, 2, 3, 4]}]}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    server = CloudServer(f"sqlite:///{tmp_path_factory.mktemp('cloud')}/cloud.db")
    server.start()
    yield server
    server.close()


@pytest.fixture
def proxy(cloud):
    with FaultProxy(cloud.url) as p:
        yield p


@pytest.fixture
def client(proxy, tmp_path, request):
    device = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:100]
    made = EnhancedAsyncLoggingClient(proxy.url, tmp_path / "buffer.db", device, **FAST)
    made.start()
    yield made
    made.close(timeout=2)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def delivered_once(cloud, client, ids) -> None:
    """Restore the link, flush, and read back: every id stored exactly once."""
    assert client.flush(timeout=30), client.get_buffer_status()
    result = audit(cloud.url, client.device_id, ids)
    assert result.ok and result.stored == len(ids) and result.unexpected == 0, result
    assert result.gaps == []


def log(client, n: int) -> list[str]:
    return [client.log_prediction(DET, image_id=f"f{i}") for i in range(n)]


def test_pass_forwards_requests_and_the_clouds_answers(cloud, proxy, client):
    ids = log(client, 40)
    delivered_once(cloud, client, ids)
    counts = proxy.counters()
    assert counts["by_outcome"] == {"forwarded": counts["requests"]}
    assert counts["accepted"] == 40 and counts["duplicates"] == 0


def test_down_refuses_connections_then_recovers(cloud, proxy, client):
    proxy.down()
    ids = log(client, 50)
    wait_for(lambda: client.connectivity.is_down)
    with pytest.raises(httpx.ConnectError):  # refused at the TCP level
        httpx.head(f"{proxy.url}/health", timeout=1)
    assert client.store.counts()["pending"] == 50
    assert proxy.counters()["log_requests"] == 0  # refused before any request was read
    proxy.pass_through()
    delivered_once(cloud, client, ids)
    kinds = [e["kind"] for e in proxy.events]
    assert kinds.count("outage_start") == 1 and kinds.count("outage_end") == 1


def test_hang_times_out_and_nothing_is_marked_sent(cloud, proxy, client):
    proxy.hang()
    ids = log(client, 40)
    wait_for(lambda: proxy.counters()["by_outcome"].get("hung", 0) >= 2)
    wait_for(lambda: client.sender.stats.last_error is not None)
    assert "timeout" in client.sender.stats.last_error.lower()
    assert client.store.counts()["sent"] == 0
    proxy.pass_through()
    delivered_once(cloud, client, ids)


def test_5xx_storm_behind_a_live_health_endpoint(cloud, proxy, client):
    storm_start = time.time()
    proxy.status(503, retry_after=0.2)
    ids = log(client, 70)
    wait_for(lambda: proxy.counters()["by_outcome"].get("injected", 0) >= 4)
    wait_for(lambda: any(r["path"] == "/health" and r["t"] > storm_start for r in proxy.requests))
    storm = [r for r in proxy.requests if r["mode"] == "status:503"]
    health = [r for r in proxy.requests if r["path"] == "/health" and r["t"] > storm_start]
    assert all(r["path"] == "/log" for r in storm)
    assert all(r["outcome"] == "forwarded" and r["status"] == 200 for r in health)
    assert client.store.counts()["sent"] == 0
    proxy.pass_through()
    delivered_once(cloud, client, ids)


def test_429_retry_after_is_waited_out_before_the_next_attempt(cloud, proxy, client):
    # Two 429s fit inside max_retries=2, so both delays come from the backoff policy.
    proxy.fail_next(2, 429, retry_after=1.0)
    ids = log(client, 10)
    delivered_once(cloud, client, ids)
    posts = proxy.log_requests()
    assert [r["status"] for r in posts[:3]] == [429, 429, 200]
    for answered, nxt in zip(posts, posts[1:3]):
        assert nxt["t"] - answered["t_done"] >= 0.95  # backoff_cap is 0.3 s: this is Retry-After


def test_retry_after_is_honoured_even_after_giving_up(cloud, proxy, client):
    proxy.status(429, retry_after=1.0)
    log(client, 10)
    wait_for(lambda: len(proxy.log_requests()) >= 6)
    proxy.pass_through()
    posts = proxy.log_requests()[:6]
    # Up to drain_concurrency (2) requests go out together as one wave: rows logged while the
    # first batch was being claimed form a second batch. Between waves, Retry-After holds.
    gaps = [b["t"] - a["t_done"] for a, b in zip(posts, posts[1:])]
    waves = [g for g in gaps if g >= 0.05]
    assert all(g >= 0.95 for g in waves), gaps
    assert len(waves) >= 2 and len(gaps) - len(waves) <= len(waves) + 1, gaps


def test_slow_answers_past_the_timeout_make_duplicates_the_cloud_absorbs(cloud, proxy, client):
    proxy.slow(1.5, health=False)  # request_timeout is 1 s: the cloud commits, the edge gives up
    ids = log(client, 32)
    wait_for(lambda: proxy.counters()["by_outcome"].get("slowed", 0) >= 2)
    assert client.store.counts()["sent"] == 0
    proxy.pass_through()
    delivered_once(cloud, client, ids)
    # a slowed request is counted when its held answer is finally written: wait for those
    wait_for(lambda: proxy.counters()["accepted"] == 32)
    counts = proxy.counters()
    assert counts["accepted"] == 32 and counts["duplicates"] >= 32


def test_dropped_acknowledgements_are_deduplicated_by_the_cloud(cloud, proxy, client):
    proxy.drop_ack()
    ids = log(client, 64)
    wait_for(lambda: proxy.counters()["accepted"] == 64)  # all committed, none acknowledged
    assert client.store.counts()["sent"] == 0  # no acknowledgement ever reached the edge
    proxy.pass_through()
    delivered_once(cloud, client, ids)
    counts = proxy.counters()
    # One request or several: 64 records may all be committed before the first claim.
    assert counts["by_outcome"]["dropped_ack"] >= 1 and counts["accepted"] == 64
    assert counts["duplicates"] >= 64  # and received again after it
    stats = httpx.get(f"{cloud.url}/stats", params={"device_id": client.device_id}).json()
    assert stats["total_records"] == 64


def test_flapping_link_loses_and_duplicates_nothing(cloud, proxy, client):
    proxy.flap(0.3)
    ids = []
    for _ in range(20):
        ids += log(client, 5)
        time.sleep(0.1)
    proxy.pass_through()
    delivered_once(cloud, client, ids)
    assert len(proxy.events.of("outage_start")) >= 3
    assert len(proxy.events.of("outage_start")) == len(proxy.events.of("outage_end"))


def test_fail_next_resets_exactly_n_requests(cloud, proxy, client):
    proxy.fail_next(3, "down")
    ids = log(client, 20)
    delivered_once(cloud, client, ids)
    outcomes = [r["outcome"] for r in proxy.log_requests()]
    assert outcomes[:3] == ["reset"] * 3 and set(outcomes[3:]) == {"forwarded"}


def test_fault_values_and_shared_timeline(cloud):
    assert Fault.make(503).health is False and Fault.make("slow", seconds=1).health is True
    with pytest.raises(ValueError):
        Fault("status")
    events = EventLog()
    events.add("edge_killed", device="cam-1")
    with FaultProxy(cloud.url, events=events) as proxy:
        proxy.down()
    assert [e["kind"] for e in events] == [
        "edge_killed",
        "mode",
        "mode",
        "outage_start",
        "outage_end",
    ]


def test_close_is_bounded_with_hung_connections(cloud):
    proxy = FaultProxy(cloud.url)
    proxy.hang()
    with httpx.Client(timeout=30) as http:
        errors = []

        def call():
            try:
                http.get(f"{proxy.url}/health")
            except httpx.HTTPError as exc:
                errors.append(exc)

        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: proxy.counters()["by_outcome"].get("hung") == 1)
        started = time.monotonic()
        proxy.close()
        proxy.close()  # idempotent
        assert time.monotonic() - started < 3
        t.join(5)
    assert errors and isinstance(errors[0], httpx.ReadError)


def test_kill_process_sigkills_and_reaps():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert kill_process(proc) == -9
    assert kill_process(proc) == -9  # already gone: only reaped
