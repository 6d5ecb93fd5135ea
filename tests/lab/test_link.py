"""The fault proxy's ``link`` shaping: a token bucket shared by every connection, a round
trip per exchange paid concurrently, seeded stalls, under every other mode.

Timing properties are checked as bounds with generous slack (the machine is shared):
a shaped transfer can never beat the link (bytes / bandwidth + RTT is a floor, up to one
chunk of burst), and it must not take much longer either. The proxy's own byte counters
are the evidence of what crossed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from edgebuf.lab.faults import FaultProxy
from edgebuf.lab.link import CHUNK, Link, LinkShaper, TokenBucket, mbit


class _Echo(BaseHTTPRequestHandler):
    """An upstream that reads the body and answers 200 at once (the link is what we time)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = json.dumps({"accepted": len(body), "duplicates": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream) as p:
        yield p


def post(url: str, size: int) -> float:
    """POST ``size`` bytes to ``/log``; the client-side latency in seconds."""
    t0 = time.perf_counter()
    answer = httpx.post(
        f"{url}/log", content=b"x" * size, timeout=30, headers={"Content-Type": "application/json"}
    )
    elapsed = time.perf_counter() - t0
    assert answer.status_code in (200, 429), answer.text
    return elapsed


# ---------------------------------------------------------------------- pure parts
def test_token_bucket_serves_at_its_rate_and_in_order() -> None:
    bucket = TokenBucket(rate=1000.0, burst=100, now=0.0)
    assert bucket.reserve(100, 0.0) == 0.0  # the burst is there
    waits = [bucket.reserve(250, 0.0) for _ in range(4)]
    assert waits == pytest.approx([0.25, 0.5, 0.75, 1.0])  # FIFO: one bottleneck
    # idle time refills at most `burst`, never a windfall
    assert bucket.reserve(100, 10.0) == 0.0
    assert bucket.reserve(100, 10.0) == pytest.approx(0.1)


def test_token_bucket_freeze_delays_what_comes_after() -> None:
    bucket = TokenBucket(rate=1000.0, burst=1, now=0.0)
    bucket.freeze(2.0, now=0.0)
    assert bucket.reserve(1000, 0.0) == pytest.approx(3.0, abs=1e-3)


def test_stalls_are_seeded_and_freeze_the_link() -> None:
    def schedule(seed: int) -> list[float]:
        now = [0.0]
        shaper = LinkShaper(
            Link(bandwidth=1e6, stall_every=1.0, stall_seconds=0.25, seed=seed),
            clock=lambda: now[0],
        )
        waits = []
        for step in range(200):
            now[0] = step * 0.1
            waits.append(round(shaper._stall_wait(now[0]), 6))
        return waits

    a, b, c = schedule(7), schedule(7), schedule(8)
    assert a == b and a != c  # same seed, same weather
    stalled = sum(1 for w in a if w > 0)
    assert 5 <= stalled <= 120  # ~20 stalls of 0.25 s in 20 s, each seen by 1-3 probes


def test_link_validates_its_figures() -> None:
    with pytest.raises(ValueError):
        Link(bandwidth=-1)
    with pytest.raises(ValueError):
        Link(stall_every=1.0)  # stalls need a duration
    assert Link(bandwidth=mbit(5), rtt=0.15).name == "link:5Mbit/s,150ms"
    assert Link(bandwidth=1000, rtt=0.5).limit_seconds(1500, 500) == pytest.approx(2.5)


# ---------------------------------------------------------------------- through the proxy
def test_latency_of_one_request_is_rtt_plus_bytes_over_bandwidth(proxy: FaultProxy) -> None:
    bandwidth, rtt, size = 200_000.0, 0.3, 60_000
    shape = proxy.link(bandwidth_bps=bandwidth, rtt=rtt)
    assert shape is not None
    latency = post(proxy.url, size)
    req = proxy.log_requests()[-1]
    assert req["bytes_up"] >= size and req["bytes_down"] > 0  # the proxy's own counters
    floor = shape.limit_seconds(req["bytes_up"], req["bytes_down"]) - 2 * CHUNK / bandwidth
    assert latency >= floor, (latency, floor)  # the client can never see less
    at_proxy = req["t_answered"] - req["t"]  # from the request in to the answer out
    assert floor <= at_proxy <= floor * 1.2 + 0.3, (at_proxy, floor)


def test_throughput_of_concurrent_requests_is_the_shared_bandwidth(proxy: FaultProxy) -> None:
    bandwidth, n, size = 300_000.0, 6, 100_000
    proxy.link(bandwidth_bps=bandwidth, rtt=0.05)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(lambda _: post(proxy.url, size), range(n)))
    elapsed = time.perf_counter() - t0
    counts = proxy.counters()
    assert counts["log_requests"] == n and counts["log_bytes_up"] >= n * size
    posts = proxy.log_requests()
    # On the link, by the proxy's clock: from the first arrival to the last byte across.
    span = max(r["t_up"] for r in posts) - min(r["t"] for r in posts)
    throughput = counts["bytes_up"] / span
    # Shared, not per connection: six connections together never beat one link ...
    assert throughput <= bandwidth * 1.02 + n * CHUNK / span, throughput
    assert counts["bytes_up"] / elapsed <= bandwidth * 1.02 + n * CHUNK / elapsed
    # ... and fill it (2 s of transfer; a loaded machine may start some clients late).
    assert throughput >= bandwidth * 0.5, throughput


def test_round_trips_of_requests_in_flight_overlap(proxy: FaultProxy) -> None:
    rtt, n = 0.5, 6
    proxy.link(bandwidth_bps=0, rtt=rtt)  # no bandwidth limit: round trips only
    with ThreadPoolExecutor(n) as pool:
        latencies = list(pool.map(lambda _: post(proxy.url, 200), range(n)))
    assert min(latencies) >= rtt * 0.98
    posts = proxy.log_requests()
    each = [r["t_answered"] - r["t"] for r in posts]
    span = max(r["t_answered"] for r in posts) - min(r["t"] for r in posts)
    assert min(each) >= rtt * 0.98
    # pipelined: six round trips in much less than six; serialised would be >= 3 s
    assert span < n * rtt / 2, (span, each)


def test_link_composes_with_the_other_modes(proxy: FaultProxy) -> None:
    def last_exchange() -> float:  # seconds at the proxy, request in to answer out
        req = proxy.requests[-1]
        return req["t_answered"] - req["t"]

    proxy.link(bandwidth_bps=100_000, rtt=0.4)
    proxy.status(503, retry_after=1)
    answer = httpx.post(f"{proxy.url}/log", content=b"{}", timeout=10)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert last_exchange() >= 0.39  # an injected answer crosses the link too
    proxy.pass_through()
    proxy.fail_next(1, 429)
    post(proxy.url, 100)
    assert proxy.requests[-1]["status"] == 429 and last_exchange() >= 0.39
    proxy.down()
    seen = len(proxy.requests)
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{proxy.url}/log", content=b"{}", timeout=5)
    assert len(proxy.requests) == seen  # refused: nothing crossed the link
    proxy.pass_through()
    post(proxy.url, 100)
    assert last_exchange() >= 0.39  # the link outlives mode changes ...
    assert proxy.link(None) is None
    post(proxy.url, 100)
    assert last_exchange() < 0.39  # ... until it is removed
    events = [e for e in list(proxy.events) if e["kind"] == "link"]
    assert [e["link"] for e in events] == ["link:0.8Mbit/s,400ms", "none"]
    assert not any(
        e["kind"] == "outage_start" and e.get("mode", "").startswith("link")
        for e in list(proxy.events)
    )
    assert proxy.counters()["by_outcome"]["injected"] == 2


def test_stalls_slow_a_transfer_and_are_counted(proxy: FaultProxy) -> None:
    proxy.link(bandwidth_bps=200_000, rtt=0.0, stalls=(0.3, 0.3), seed=11)
    t0 = time.perf_counter()
    post(proxy.url, 200_000)  # 1 s of transfer, ~3 stalls of 0.3 s expected
    elapsed = time.perf_counter() - t0
    stalls = proxy.counters()["stalls"]
    assert stalls >= 1
    assert elapsed >= 1.0 + 0.3 * stalls * 0.5 - 0.05, (elapsed, stalls)
