"""``DeliveryState``: a read-only snapshot of what only a running client knows.

The monitor and the status report read this instead of the client's internals:
connectivity, the last success and error, the send rate, whether a backlog is draining,
and the delivery fault now in force (``FaultLog``: a TLS failure, a proxy's answer...).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from edgebuf.clock import Clock

log = logging.getLogger("edgebuf.delivery")

# Kinds of delivery fault (``Fault.kind``), as shown by ``get_full_status()``:
TLS = "tls"  # handshake or certificate refused (either side), or a proxy's certificate page
NETWORK = "network"  # connection refused, reset, DNS, timeout
PROXY = "proxy"  # an answer that is not the cloud's own (HTML error page, captive portal)
NOT_ACK = "not_ack"  # a 2xx that is not the cloud's acknowledgement of this batch
CLOUD = "cloud"  # the cloud's own refusal or outage (401/403/429/5xx ...)


@dataclass(frozen=True)
class Fault:
    """Why delivery is failing now: ``kind`` (see above), a readable ``reason``, since when
    (wall time) and how many attempts in a row met it."""

    kind: str
    reason: str
    since: float
    attempts: int = 1


class FaultLog:
    """The delivery fault in force, logged once when it starts or changes and once when
    delivery works again, never once per retry. Thread-safe."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._fault: Fault | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> Fault | None:
        return self._fault

    def report(self, kind: str, reason: str) -> None:
        """One failed attempt (a send or a probe) for ``reason``."""
        with self._lock:
            old = self._fault
            if old is not None and (old.kind, old.reason) == (kind, reason):
                self._fault = Fault(kind, reason, old.since, old.attempts + 1)
                return
            self._fault = Fault(kind, reason, self.clock.time())
        log.warning("delivery fault (%s): %s; records stay pending", kind, reason)

    def clear(self) -> None:
        """The cloud acknowledged a batch: no fault any more."""
        with self._lock:
            old, self._fault = self._fault, None
        if old is not None:
            log.warning(
                "delivery works again after %d failed attempts (%s: %s)",
                old.attempts,
                old.kind,
                old.reason,
            )


@dataclass(frozen=True)
class DeliveryState:
    """What the running client's delivery parts know at one instant (wall times in epoch s)."""

    endpoint: str
    connectivity: str  # "up", "down" or "unknown"
    last_probe_at: float | None
    last_change_at: float | None
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    send_rate_per_s: float
    recovering: bool
    consecutive_failures: int
    last_reconciliation_at: float | None = None
    last_reconciliation: dict[str, object] | None = None  # what its last run did
    fault: Fault | None = None
