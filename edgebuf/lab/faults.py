"""Fault injection for drills, tests and notebooks: the timeline, the fault modes, kills.

``FaultProxy`` sits between an edge client
and the real cloud on a real socket and misbehaves on command: refuse connections, hang,
answer 503/429 with ``Retry-After``, answer slowly, forward a batch and drop the
acknowledgement, flap; and, under any of those modes, shape the wire like a factory uplink
(``link``: bandwidth, round trip, stalls; see ``edgebuf.lab.link``). Here is its control surface (modes switched from any thread, the
timeline, the counters); the socket work is ``edgebuf.lab.faultproxy``. ``Fault`` (one mode, a value) is
``edgebuf.lab.fault``, ``EventLog`` (the timeline) ``edgebuf.lab.events`` and ``kill_process``
``edgebuf.lab.processes``; they are re-exported here for convenience.

    with FaultProxy(cloud.url) as proxy:
        client = EnhancedAsyncLoggingClient(proxy.url, db, "cam-1")
        proxy.status(503, retry_after=1)   # a 5xx storm behind a healthy /health
        ...
        proxy.pass_through()
        proxy.link(bandwidth_bps=mbit(5), rtt=0.15)   # 5 Mbit/s, 150 ms, under every mode
        proxy.link(None)                               # the plain loopback again
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Coroutine
from typing import Any

from edgebuf.lab.events import EventLog
from edgebuf.lab.fault import DOWN, PASS, Fault
from edgebuf.lab.faultproxy import ProxyServer
from edgebuf.lab.link import Link, LinkShaper, mbit
from edgebuf.lab.processes import kill_process

__all__ = ["EventLog", "Fault", "FaultProxy", "Link", "kill_process", "mbit"]


class FaultProxy:
    """A misbehaving HTTP hop between an edge client and ``upstream`` (the cloud's base URL).

    Listens on 127.0.0.1 (a free port, ``url``), serves from its own thread and event loop,
    and starts in ``pass`` mode. Switch modes from any thread; each call returns once the
    mode is in force. Every change lands on ``events`` (``mode`` entries, and
    ``outage_start`` / ``outage_end`` around every stretch that is not a faithful pass),
    every request on ``requests``; ``counters()`` sums them. ``close()`` is idempotent and
    bounded; the proxy is also a context manager.
    """

    def __init__(
        self,
        upstream: str,
        *,
        events: EventLog | None = None,
        upstream_timeout: float = 30.0,
        port: int = 0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.events = events if events is not None else EventLog()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._mode = PASS
        self._link: Link | None = None
        self._flap_down = False
        self._impaired = False
        self._next: collections.deque[list] = collections.deque()  # [remaining, fault, path]
        self._server = ProxyServer(
            self.upstream, self._choose, self._report, port=port, upstream_timeout=upstream_timeout
        )
        self._flap_task: asyncio.Task | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="edgebuf-faultproxy", daemon=True
        )
        self._closed = False
        self._thread.start()
        try:
            self._call(self._server.listen())
        except BaseException:
            self.close()
            raise
        self.events.add("mode", mode="pass")

    @property
    def url(self) -> str:
        """Base URL to give the client instead of the cloud's."""
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def mode(self) -> Fault:
        """The mode in force (``fail_next`` entries apply on top of it)."""
        return self._mode

    # ------------------------------------------------------------------ modes
    def set_mode(self, kind: str | Fault | int, **params: Any) -> Fault:
        """Put a mode in force (``"down"``, ``503``, ``Fault("slow", seconds=2)``, ...)."""
        fault = Fault.make(kind, **params)
        self._call(self._apply(fault))
        return fault

    def pass_through(self) -> Fault:
        """Forward everything faithfully (the normal state)."""
        return self.set_mode("pass")

    def down(self) -> Fault:
        """Refuse connections (listener closed) and reset the open ones."""
        return self.set_mode("down")

    def hang(self) -> Fault:
        """Accept and read every request, never answer."""
        return self.set_mode("hang")

    def status(self, code: int, retry_after: float | None = None, *, health: bool = False) -> Fault:
        """Answer every ``POST /log`` with ``code`` (and ``Retry-After``) without forwarding."""
        return self.set_mode("status", code=code, retry_after=retry_after, health=health)

    def slow(self, seconds: float, *, health: bool = True) -> Fault:
        """Forward, but hold each answer ``seconds`` (past the client's timeout: duplicates)."""
        return self.set_mode("slow", seconds=seconds, health=health)

    def drop_ack(self, *, health: bool = False) -> Fault:
        """Forward ``POST /log`` (the cloud commits), then reset instead of answering."""
        return self.set_mode("drop_ack", health=health)

    def flap(self, period: float) -> Fault:
        """Alternate down and pass every ``period`` seconds, starting down."""
        return self.set_mode("flap", period=period)

    # ------------------------------------------------------------------ the link
    def link(
        self,
        bandwidth_bps: float | None = 0.0,
        rtt: float = 0.0,
        stalls: tuple[float, float] | None = None,
        *,
        seed: int = 0,
    ) -> Link | None:
        """Shape the wire between the edge and the proxy, under whatever mode is in force.

        ``bandwidth_bps`` is in **bytes** per second per direction (``mbit(5)`` converts
        from Mbit/s; 0 = unlimited), one token bucket per direction shared by every
        connection; ``rtt`` seconds are added to each request/response exchange (half each
        way; requests in flight pay theirs concurrently); ``stalls`` = (mean seconds
        between stalls, seconds each), drawn from ``seed``. ``link(None)`` removes the
        shaping. Requests already on the link finish under the old shape. A link is not an
        outage: no ``outage_start`` is logged for it.
        """
        shape = (
            None
            if bandwidth_bps is None
            else Link(
                bandwidth=bandwidth_bps,
                rtt=rtt,
                seed=seed,
                stall_every=stalls[0] if stalls else 0.0,
                stall_seconds=stalls[1] if stalls else 0.0,
            )
        )
        return self.set_link(shape)

    def set_link(self, shape: Link | None) -> Link | None:
        """Put a ``Link`` in force (None: no shaping); counters restart with it."""

        async def apply() -> None:
            self._server.shaper = LinkShaper(shape) if shape is not None else None

        self._call(apply())
        self._link = shape
        self.events.add("link", link=shape.name if shape is not None else "none")
        return shape

    @property
    def link_shape(self) -> Link | None:
        """The ``Link`` in force, if any."""
        return self._link

    def fail_next(
        self, n: int, mode: str | Fault | int = "down", *, path: str | None = "/log", **params: Any
    ) -> Fault:
        """Apply ``mode`` to the next ``n`` requests to ``path`` (None: any path), whatever
        the current mode; ``"down"`` here resets each of those connections."""
        fault = Fault.make(mode, **{"health": True, **params})
        with self._lock:
            self._next.append([n, fault, path])
        self.events.add("fail_next", n=n, mode=fault.name, path=path)
        return fault

    # ------------------------------------------------------------------ counters
    def counters(self) -> dict[str, Any]:
        """Requests seen, by mode and by outcome, the cloud's accepted / duplicates totals
        from the ``POST /log`` answers that went through (dropped ones included), and the
        bytes that crossed the edge side of the proxy (``bytes_up`` edge -> cloud,
        ``bytes_down`` back; ``log_bytes_up`` for ``POST /log`` alone), link or not."""
        with self._lock:
            reqs = list(self.requests)
        logs = [r for r in reqs if r["path"] == "/log"]
        shaper = self._server.shaper
        return {
            "bytes_up": sum(r.get("bytes_up", 0) for r in reqs),
            "bytes_down": sum(r.get("bytes_down", 0) for r in reqs),
            "log_bytes_up": sum(r.get("bytes_up", 0) for r in logs),
            "stalls": shaper.stalls if shaper is not None else 0,
            "requests": len(reqs),
            "log_requests": len(logs),
            "by_mode": dict(collections.Counter(r["mode"] for r in reqs)),
            "by_outcome": dict(collections.Counter(r["outcome"] for r in reqs)),
            "accepted": sum(r.get("accepted", 0) for r in logs),
            "duplicates": sum(r.get("duplicates", 0) for r in logs),
        }

    def log_requests(self) -> list[dict]:
        """The ``POST /log`` requests seen so far, in arrival order (``requests`` is in
        the order they were answered, which a slow answer reorders)."""
        with self._lock:
            posts = [r for r in self.requests if r["method"] == "POST" and r["path"] == "/log"]
        return sorted(posts, key=lambda r: r["t"])

    # ------------------------------------------------------------------ loop side
    def _call(self, coro: Coroutine, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _choose(self, method: str, path: str) -> tuple[Fault, str]:
        """The fault for one request, and the mode it is counted under (a request that
        a mode spares, such as ``/health`` in a 503 storm, counts as ``pass``)."""
        with self._lock:
            for item in self._next:
                if item[2] is None or item[2] == path:
                    item[0] -= 1
                    if item[0] <= 0:
                        self._next.remove(item)
                    return item[1], item[1].name
            mode = self._mode
        if mode.kind == "flap":  # a flap counts its requests under its own name
            return (DOWN if self._flap_down else PASS), mode.name
        return (mode, mode.name) if mode.applies_to(method, path) else (PASS, PASS.name)

    def _report(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def _mark(self, impaired: bool, mode: str) -> None:
        if impaired != self._impaired:
            self._impaired = impaired
            self.events.add("outage_start" if impaired else "outage_end", mode=mode)

    async def _apply(self, fault: Fault) -> None:
        if self._flap_task is not None:
            self._flap_task.cancel()
            self._flap_task = None
        with self._lock:
            self._mode, self._flap_down = fault, False
        self.events.add("mode", mode=fault.name)
        if fault.kind == "flap":
            self._flap_task = asyncio.ensure_future(self._flap(fault))
            await asyncio.sleep(0)  # its first (down) phase is in force when we return
            return
        if fault.kind == "down":
            self._server.unlisten()
        else:
            await self._server.listen()
        self._mark(fault.kind != "pass", fault.name)

    async def _flap(self, fault: Fault) -> None:
        down = True
        while True:
            with self._lock:
                self._flap_down = down
            if down:
                self._server.unlisten()
            else:
                await self._server.listen()
            self._mark(down, fault.name)
            await asyncio.sleep(fault.period)
            down = not down

    # ------------------------------------------------------------------ lifecycle
    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, reset every connection, stop the thread. Idempotent, bounded."""
        if self._closed:
            return
        self._closed = True
        if self._loop.is_running():

            async def stop() -> None:
                if self._flap_task is not None:
                    self._flap_task.cancel()
                await self._server.shutdown()

            try:
                self._call(stop(), timeout)
            except Exception:  # bounded: a stuck handler must not hold close() up
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        if self._impaired:
            self._mark(False, "closed")

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
