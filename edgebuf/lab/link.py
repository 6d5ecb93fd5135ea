"""``Link``: the wire between the edge and the fault proxy, shaped like a factory uplink.

A value (``Link``: bandwidth, round trip, random stalls) and the two parts that enforce
it inside the proxy's event loop:

- ``TokenBucket``: a reservation token bucket (pure, any clock). ``reserve(n, now)``
  takes ``n`` bytes' worth of tokens, going into debt if need be, and says how long the
  caller must wait before those bytes are on the far side. Reservations are served in
  the order they are made, so a bucket is one bottleneck link.
- ``LinkShaper``: one bucket per direction, shared by every connection through the
  proxy. A message is sent in ``CHUNK``-byte pieces, each reserved just before it is
  sent, so concurrent requests interleave on the link the way TCP flows share a
  bottleneck (a small live batch is not queued behind a whole backlog batch). Each
  direction then adds half the round trip; requests in flight pay their round trips
  concurrently (pipelined), not one after the other.

The model is a kept-alive connection: one round trip per request/response exchange, no
TCP handshake or slow start. Stalls (an LTE handover, a cell reselection) freeze the whole
link in both directions: they arrive as a Poisson process (mean gap ``stall_every``),
last ``stall_seconds`` each, and are drawn from ``random.Random(seed)``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["CHUNK", "Link", "LinkShaper", "TokenBucket", "mbit"]

CHUNK = 4096  # bytes per reservation: the interleaving grain of concurrent messages


def mbit(megabits_per_second: float) -> float:
    """Bytes per second of a link rated in Mbit/s (``mbit(5)`` = 625,000 B/s)."""
    return megabits_per_second * 1_000_000 / 8


@dataclass(frozen=True)
class Link:
    """A link's shape. ``bandwidth`` in bytes/s per direction (0: unlimited), ``rtt`` in
    seconds per request/response exchange, optional stalls (``stall_every`` = mean seconds
    between stalls, 0 = none; ``stall_seconds`` each), ``seed`` for the stall draws."""

    bandwidth: float = 0.0
    rtt: float = 0.0
    stall_every: float = 0.0
    stall_seconds: float = 0.0
    seed: int = 0
    burst: int = CHUNK

    def __post_init__(self) -> None:
        if self.bandwidth < 0 or self.rtt < 0 or self.stall_every < 0 or self.stall_seconds < 0:
            raise ValueError("a link's bandwidth, rtt and stall figures must be >= 0")
        if self.stall_every and not self.stall_seconds:
            raise ValueError("stalls need stall_seconds > 0")
        if self.burst < 1:
            raise ValueError("burst must be >= 1 byte")

    @property
    def name(self) -> str:
        rate = f"{self.bandwidth * 8 / 1e6:g}Mbit/s" if self.bandwidth else "unlimited"
        text = f"link:{rate},{self.rtt * 1000:g}ms"
        if self.stall_every:
            text += f",stall {self.stall_seconds:g}s/{self.stall_every:g}s"
        return text

    def limit_seconds(self, up_bytes: int, down_bytes: int = 0) -> float:
        """The least time one exchange of these sizes can take on an idle link."""
        if not self.bandwidth:
            return self.rtt
        return self.rtt + (up_bytes + down_bytes) / self.bandwidth


class TokenBucket:
    """``rate`` bytes/s, at most ``burst`` bytes of credit; reservations may go into debt."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs rate > 0 and burst > 0")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` tokens; return the seconds until they exist (0 if they do already)."""
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def freeze(self, seconds: float, now: float) -> None:
        """No new tokens for ``seconds`` from ``now`` (a stall): later reservations wait."""
        self._refill(now)
        self.tokens = min(self.tokens, 0.0) - seconds * self.rate


class LinkShaper:
    """Enforces one ``Link`` on every connection of a proxy (inside its event loop).

    Counts what crossed: ``bytes_up`` (edge -> cloud), ``bytes_down``, ``stalls``.
    """

    def __init__(self, link: Link, clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.clock = clock
        now = clock()
        self._up = TokenBucket(link.bandwidth, link.burst, now) if link.bandwidth else None
        self._down = TokenBucket(link.bandwidth, link.burst, now) if link.bandwidth else None
        self._rng = random.Random(link.seed)
        self._next_stall = now + self._gap() if link.stall_every else float("inf")
        self._stall_until = 0.0
        self.bytes_up = 0
        self.bytes_down = 0
        self.stalls = 0

    def _gap(self) -> float:
        return self._rng.expovariate(1.0 / self.link.stall_every)

    def _stall_wait(self, now: float) -> float:
        """Start the stalls due by ``now``; the seconds still to wait for the current one."""
        while now >= self._next_stall:
            start = max(self._next_stall, self._stall_until)
            self._stall_until = start + self.link.stall_seconds
            for bucket in (self._up, self._down):
                if bucket is not None and self._stall_until > now:
                    bucket.freeze(self._stall_until - now, now)
            self.stalls += 1
            self._next_stall = self._stall_until + self._gap()
        return max(0.0, self._stall_until - now)

    async def send(self, nbytes: int, upstream: bool) -> None:
        """Carry ``nbytes`` one way: serialised on the shared bucket, then half the RTT."""
        bucket = self._up if upstream else self._down
        left = nbytes
        while True:
            piece = min(left, CHUNK) if bucket is not None else left
            now = self.clock()
            wait = self._stall_wait(now)
            if bucket is not None and piece:
                wait = max(wait, bucket.reserve(piece, now))
            if wait > 0:
                await asyncio.sleep(wait)
            left -= piece
            if left <= 0:
                break
        if upstream:
            self.bytes_up += nbytes
        else:
            self.bytes_down += nbytes
        if self.link.rtt:
            await asyncio.sleep(self.link.rtt / 2)
