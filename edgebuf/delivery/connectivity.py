"""Connectivity monitor: probes ``GET /health`` (the transport's ``probe``) and tracks up / down / restored.

``check_once`` is the whole decision; the thread around it only sleeps on an Event
(so ``close`` wakes it at once and an idle client costs no CPU). The sender reports
what it sees too: a delivered batch means up, giving up after ``max_retries`` means down.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from edgebuf.clock import Clock
from edgebuf.delivery.transport import Transport

log = logging.getLogger("edgebuf.delivery.connectivity")

UNKNOWN, UP, DOWN = "unknown", "up", "down"
StateCallback = Callable[[str, str], None]


class ConnectivityMonitor:
    """Knows whether the cloud is reachable and calls back on every change of state."""

    def __init__(
        self,
        transport: Transport,
        clock: Clock,
        *,
        interval: float = 30.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.interval = interval
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._state = UNKNOWN
        self._lock = threading.Lock()
        self._callbacks: list[StateCallback] = []
        self.last_probe_at: float | None = None  # wall time
        self.last_change_at: float | None = None
        self.transitions = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        return self._state

    @property
    def is_down(self) -> bool:
        return self._state == DOWN

    def add_callback(self, callback: StateCallback) -> None:
        """Call ``callback(old, new)`` on every state change (from whichever thread saw it)."""
        self._callbacks.append(callback)

    def _set(self, new: str, why: str) -> None:
        with self._lock:
            old = self._state
            if old == new:
                return
            self._state = new
            self.transitions += 1
            self.last_change_at = self.clock.time()
        if new == UP and old == DOWN:
            log.warning("cloud connectivity restored (%s)", why)
        elif new == DOWN:
            log.warning("cloud unreachable (%s); records stay pending on disk", why)
        else:
            log.info("cloud connectivity %s -> %s (%s)", old, new, why)
        for callback in list(self._callbacks):
            try:
                callback(old, new)
            except Exception:  # a user callback must never break monitoring
                log.exception("connectivity callback failed")

    def mark_up(self, why: str = "request succeeded") -> None:
        self._set(UP, why)

    def mark_down(self, why: str) -> None:
        self._set(DOWN, why)

    def check_once(self) -> bool:
        """Probe ``GET /health`` once and update the state; return whether it answered."""
        ok = self.transport.probe()
        self.last_probe_at = self.clock.time()
        if ok:
            self.mark_up("health probe answered")
        else:
            self.mark_down("health probe failed")
        return ok

    def next_delay(self) -> float:
        """Seconds to the next probe: the interval with +-jitter, so a fleet spreads out."""
        return self.interval * (1.0 + self._rng.uniform(-self.jitter, self.jitter))

    def request_probe(self) -> None:
        """Probe now instead of at the next interval (e.g. from ``flush``)."""
        self._wake.set()

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="edgebuf-connectivity", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:
                log.exception("connectivity probe crashed; will try again")
            self._wake.wait(self.next_delay())
            self._wake.clear()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
