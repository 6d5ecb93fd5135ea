"""BufferRecoveryManager: the backlog lane, draining pending rows oldest-first.

Whether there is a backlog is read from SQLite on every pass of the shipping loop (an index
probe: ``has_backlog``), never kept in a flag: rows released by a failed send, requeued by
``edgebuf requeue-failed`` from another process, or found on disk at start-up are all
drained the same way, with no event to miss. The lane sends oldest-first in large batches
(``backfill_batch_size``), ``concurrency`` requests at a time, while the shipping loop keeps
serving new records on the live lane between steps, so fresh predictions are not stuck
behind hours of backlog. A failed step hands control back to the shipping loop, whose
backoff honours ``Retry-After`` (429/503), so the drain paces itself to what the cloud can
take.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgebuf.clock import Clock
from edgebuf.delivery.sender import Sender, SendOutcome
from edgebuf.store import Batch, LocalBufferManager

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
        self._draining = False  # for the log and the count only; SQLite decides what to send
        self.recoveries_started = 0

    @property
    def active(self) -> bool:
        """Whether any record waits to be sent (read from the buffer, not remembered)."""
        return self.has_backlog(0)

    def has_backlog(self, live: int) -> bool:
        """Whether more than ``live`` records are pending: the newest ``live`` belong to the
        live lane's next batch, anything beyond is backlog. Costs at most ``live + 1`` index
        entries, so the shipping loop asks on every pass."""
        return self.store.count_pending(at_most=live + 1) > live

    def start_recovery(self) -> None:
        """Kept for the design's API: the shipping loop drains any backlog it finds on disk
        at every pass, so there is nothing to switch on; this only logs the intent."""
        log.debug("recovery requested; the shipping loop drains what the buffer holds")

    def stop_recovery(self) -> None:
        """Kept for the design's API (see ``start_recovery``)."""

    def _claim_all(self) -> list[Batch]:
        batches: list[Batch] = []
        try:
            for _ in range(self.concurrency):
                batch = self.store.claim(self.batch_size)
                if batch is None:
                    break
                batches.append(batch)
        except Exception:
            for batch in batches:  # claimed but never to be sent: back to pending now
                self.store.release_claim(batch.claim_id, "claim of a sibling batch failed")
            raise
        return batches

    def drain_step(self) -> SendOutcome | None:
        """Send up to ``concurrency`` backlog batches (oldest first) at once. Returns None
        when nothing is pending.

        Two requests in flight let the edge claim, encode and compress one batch while the
        cloud stores the other; more would only queue at the cloud's database."""
        batches = self._claim_all()
        if not batches:
            if self._draining:
                self._draining = False
                log.info("recovery complete: no pending records left")
            return None
        if not self._draining:
            self._draining = True
            self.recoveries_started += 1
            log.info("recovery started: draining pending records")
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
