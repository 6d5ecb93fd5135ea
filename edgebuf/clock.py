"""Clocks: the seam that lets backoff, batch timeouts, probes and cleanup be tested.

Durations (batch timeout, backoff, probe interval) use ``monotonic()`` so a wall
clock that jumps cannot stall or rush them. Record timestamps and ``sent_at``
use ``time()`` (wall clock, epoch seconds), because they are facts for humans
and for the cloud.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol


class Clock(Protocol):
    """What edgebuf components need to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (durations only)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (timestamps only)."""

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or ``timeout`` seconds of this clock pass; True if set."""


class SystemClock:
    """The real clocks of the host."""

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


class FakeClock:
    """A manually advanced clock for tests, notebooks and simulations.

    ``advance`` moves both clocks; ``jump_wall`` moves only the wall clock, the
    way an NTP step or a mis-set RTC does on a real box.
    """

    def __init__(self, start_wall: float = 1_767_225_600.0, start_mono: float = 1_000.0) -> None:
        self._wall = start_wall
        self._mono = start_mono
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def time(self) -> float:
        with self._lock:
            return self._wall

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Virtual time passes instead of real time: the clock moves ``timeout`` forward
        (unless ``event`` is already set), so a wait with a timeout always ends."""
        if event.is_set():
            return True
        self.advance(max(0.0, timeout))
        return event.is_set()

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        with self._lock:
            self._mono += seconds
            self._wall += seconds

    def jump_wall(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (may be negative); monotonic is unchanged."""
        with self._lock:
            self._wall += seconds
