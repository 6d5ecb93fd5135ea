"""How many backlog requests to keep in flight: a fixed number, or one that adapts.

``AdaptiveConcurrency`` follows Vector's adaptive request concurrency (ARC), itself TCP's
congestion control applied to requests: additive increase while the round trip stays
flat, multiplicative decrease when it rises or the cloud pushes back. Per observation
window (one past round trip long, the past being an EWMA with Vector's ``ewma_alpha``
0.4) it looks at the window's mean round trip:

- a failed request (429, 503, 5xx, timeout, network error) in the window: halve
  (``backoff_ratio``; at most once per window, however many requests were refused);
- the mean round trip rose beyond ``max_bloat`` (1.5) times the lowest window mean of
  the last ``floor_windows``: multiply by ``decrease_ratio`` (Vector's 0.9), or by
  ``max_bloat * floor / mean`` when that is smaller (a window far over the pipe comes
  back in one step, as in Netflix's gradient limiter; never below ``backoff_ratio``);
- otherwise, if the window really had ``limit`` requests in flight: grow, by doubling
  until the first decrease (slow start: a long, thin pipe needs tens of requests in
  flight and should not take a minute to get there), by one per window after.

One departure from Vector: "rising" is measured against the lowest recent round trip
(the no-load baseline of TCP Vegas and Envoy's gradient controller), not against the
EWMA plus a few deviations. On a bandwidth-limited uplink every extra request raises
every round trip a little even below the pipe's capacity (they share the bandwidth), so
the EWMA test stops the window at a fraction of the pipe (measured: 4 of the 7 a 5 Mbit/s,
600 ms link needs); and an EWMA follows a slowly growing queue up, which the floor does not.

Always within ``[1, max_limit]``. Pure: a clock and numbers in, a number out; the
backlog lane (``recovery``) feeds it and obeys ``limit``. ``FixedConcurrency`` is the
same interface with a constant.
"""

from __future__ import annotations

import collections
import math

from edgebuf.clock import Clock

__all__ = ["AdaptiveConcurrency", "FixedConcurrency"]


class FixedConcurrency:
    """Always ``limit`` requests in flight (the lane before adaptation; ``drain_adaptive=False``)."""

    adaptive = False

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.max_limit = self.limit

    def note_in_flight(self, n: int) -> None:
        pass

    def on_response(self, rtt: float, *, ok: bool) -> None:
        pass


class AdaptiveConcurrency:
    """Additive increase, multiplicative decrease of the requests in flight (see module)."""

    adaptive = True

    def __init__(
        self,
        clock: Clock,
        *,
        initial: int = 2,
        max_limit: int = 32,
        decrease_ratio: float = 0.9,
        backoff_ratio: float = 0.5,
        ewma_alpha: float = 0.4,
        max_bloat: float = 1.5,
        floor_windows: int = 100,
    ) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be >= 1")
        self.clock = clock
        self.max_limit = max_limit
        self._limit = float(min(max(1, initial), max_limit))
        self.decrease_ratio = decrease_ratio
        self.backoff_ratio = backoff_ratio
        self.alpha = ewma_alpha
        self.max_bloat = max_bloat
        self.slow_start = True
        self.past_rtt: float | None = None  # EWMA of window means: the window length
        self._floors: collections.deque[float] = collections.deque(maxlen=floor_windows)
        self._window_start = clock.monotonic()
        self._rtts: list[float] = []
        self._failed = False
        self._reached = False
        self._last_decrease = -math.inf
        self.windows = 0  # decisions taken, for status and tests
        self.increases = 0
        self.decreases = 0

    @property
    def limit(self) -> int:
        """Requests the lane may have in flight now."""
        return max(1, min(self.max_limit, math.floor(self._limit)))

    def note_in_flight(self, n: int) -> None:
        """The lane had ``n`` requests in flight: growing is earned only at the limit."""
        if n >= self.limit:
            self._reached = True

    def on_response(self, rtt: float, *, ok: bool) -> None:
        """One request ended after ``rtt`` seconds; ``ok`` False for any failed request."""
        if ok:
            self._rtts.append(rtt)
        else:
            self._failed = True
        now = self.clock.monotonic()
        window = self.past_rtt if self.past_rtt is not None else (rtt if ok else 0.0)
        # A failure acts at once, but a burst of them (every request in flight answered
        # 503) halves once per window, not once per request.
        prompt = self._failed and now - self._last_decrease >= window
        if prompt or now - self._window_start >= window:
            self._decide(now)

    def _decide(self, now: float) -> None:
        current = sum(self._rtts) / len(self._rtts) if self._rtts else None
        floor = self.floor
        if self._failed:
            self._decrease(self.backoff_ratio, now)
        elif current is not None and floor is not None and current > floor * self.max_bloat:
            gradient = floor * self.max_bloat / current
            self._decrease(max(self.backoff_ratio, min(self.decrease_ratio, gradient)), now)
        elif current is not None and self._reached:
            self._limit = min(
                float(self.max_limit), self._limit * 2 if self.slow_start else self._limit + 1
            )
            self.increases += 1
        if current is not None:
            if self.past_rtt is None:
                self.past_rtt = current
            else:
                self.past_rtt += self.alpha * (current - self.past_rtt)
            self._floors.append(current)
        self.windows += 1
        self._window_start = now
        self._rtts = []
        self._failed = self._reached = False

    @property
    def floor(self) -> float | None:
        """The lowest window mean round trip lately: the no-load baseline."""
        return min(self._floors) if self._floors else None

    def _decrease(self, ratio: float, now: float) -> None:
        self._last_decrease = now
        self._limit = max(1.0, self._limit * ratio)
        self.slow_start = False
        self.decreases += 1
