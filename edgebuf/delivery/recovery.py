"""BufferRecoveryManager: drains the backlog of pending rows after an outage or a restart.

The backlog lane sends oldest-first in large batches (``backfill_batch_size``), one request
at a time, while the shipping loop keeps serving new records on the live lane between
steps, so fresh predictions are not stuck behind hours of backlog. A failed step hands
control back to the shipping loop, whose backoff honours ``Retry-After`` (429/503), so the
drain paces itself to what the cloud can take.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgebuf.clock import Clock
from edgebuf.delivery.sender import Sender, SendOutcome
from edgebuf.store import LocalBufferManager

log = logging.getLogger("edgebuf.delivery.recovery")


@dataclass
class RecoveryReport:
    """What one recovery run (``run``) delivered."""

    sent: int = 0
    failed: int = 0
    requests: int = 0
    seconds: float = 0.0
    complete: bool = False
    last_error: str | None = None


class BufferRecoveryManager:
    """Owns the "drain the backlog" mode of the edge client."""

    def __init__(
        self,
        store: LocalBufferManager,
        sender: Sender,
        clock: Clock,
        *,
        batch_size: int = 512,
        concurrency: int = 2,
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._active = threading.Event()
        self.recoveries_started = 0
        self.on_start = None  # set by the client: wakes the shipping loop

    @property
    def active(self) -> bool:
        return self._active.is_set()

    def start_recovery(self) -> None:
        """Begin draining pending rows (no-op if a drain is already under way)."""
        if not self._active.is_set():
            self.recoveries_started += 1
            self._active.set()
            log.info("recovery started: draining pending records")
        if self.on_start is not None:
            self.on_start()

    def stop_recovery(self) -> None:
        self._active.clear()

    def drain_step(self) -> SendOutcome | None:
        """Send up to ``concurrency`` backlog batches (oldest first) at once. Returns None
        when nothing is pending, which ends the recovery.

        Two requests in flight let the edge claim, encode and compress one batch while the
        cloud stores the other; more would only queue at the cloud's database."""
        batches = []
        for _ in range(self.concurrency):
            batch = self.store.claim(self.batch_size)
            if batch is None:
                break
            batches.append(batch)
        if not batches:
            if self._active.is_set():
                self._active.clear()
                log.info("recovery complete: no pending records left")
            return None
        if len(batches) == 1:
            return self.sender.send_batch(batches[0])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency - 1, "edgebuf-drain")
        futures = [self._pool.submit(self.sender.send_batch, b) for b in batches[1:]]
        outcomes = [self.sender.send_batch(batches[0])] + [f.result() for f in futures]
        total = SendOutcome()
        for o in outcomes:
            total.sent += o.sent
            total.failed += o.failed
            total.released += o.released
            total.requests += o.requests
            total.retry = total.retry or o.retry
        return total

    def close(self) -> None:
        """Release the helper thread (the client calls this on close)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, *, max_seconds: float | None = None) -> RecoveryReport:
        """Drain synchronously in the calling thread until nothing is pending, a send fails,
        or ``max_seconds`` pass. For tools and tests; the client drains in its own thread."""
        report = RecoveryReport()
        start = self.clock.monotonic()
        self.start_recovery()
        while True:
            outcome = self.drain_step()
            if outcome is None:
                report.complete = True
                break
            report.sent += outcome.sent
            report.failed += outcome.failed
            report.requests += outcome.requests
            if not outcome.ok:
                report.last_error = outcome.retry.error if outcome.retry else None
                break
            if max_seconds is not None and self.clock.monotonic() - start >= max_seconds:
                break
        report.seconds = self.clock.monotonic() - start
        return report
