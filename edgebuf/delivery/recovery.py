"""BufferRecoveryManager: drains the backlog of pending rows after an outage or a restart.

The backlog lane sends oldest-first in large batches (``backfill_batch_size``), with up
to ``limit`` requests in flight (a sliding window: each step tops the window up, waits for
the first answer and hands back), while the shipping loop keeps serving new records on
the live lane between steps, so fresh predictions are not stuck behind hours of backlog.
A failed step hands control back to the shipping loop, whose backoff honours
``Retry-After`` (429/503), so the drain paces itself to what the cloud can take.

How many in flight is ``edgebuf.delivery.concurrency``'s decision: ``AdaptiveConcurrency``
(the default) grows the window while round trips stay flat, which a long, thin uplink
needs (its bandwidth-delay product is tens of batches), and shrinks it on 429/503 or
rising round trips, so a busy cloud database is not queued into the ground;
``FixedConcurrency`` keeps it constant. Each request still claims, sends and settles its
own rows through ``Sender`` (exactly once is theirs, not this module's).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from edgebuf.clock import Clock
from edgebuf.delivery.concurrency import AdaptiveConcurrency, FixedConcurrency
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
        adaptive: bool = False,
    ) -> None:
        self.store = store
        self.sender = sender
        self.clock = clock
        self.batch_size = batch_size
        self.concurrency = max(1, concurrency)  # the most requests in flight
        self.limiter: AdaptiveConcurrency | FixedConcurrency = (
            AdaptiveConcurrency(clock, initial=min(2, self.concurrency), max_limit=self.concurrency)
            if adaptive and self.concurrency > 1
            else FixedConcurrency(self.concurrency)
        )
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[Future] = set()
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

    @property
    def in_flight(self) -> int:
        """Backlog requests sent and not yet answered."""
        return len(self._in_flight)

    def _timed_send(self, batch: Batch) -> tuple[SendOutcome, float]:
        t0 = self.clock.monotonic()
        outcome = self.sender.send_batch(batch)
        return outcome, (self.clock.monotonic() - t0) / max(1, outcome.requests)

    def drain_step(self) -> SendOutcome | None:
        """Top the window up to ``limiter.limit`` backlog batches (oldest first), wait for
        the first answer, return what the answered ones delivered. Returns None when
        nothing is pending and nothing is in flight, which ends the recovery.

        Answers that arrived while the shipping loop was busy elsewhere are handed back
        first, without sending more, so a failure reaches the loop's backoff at once."""
        done = {f for f in self._in_flight if f.done()}
        if not done:
            limit = self.limiter.limit
            while len(self._in_flight) < limit:
                batch = self.store.claim(self.batch_size)
                if batch is None:
                    break
                if limit == 1 and not self._in_flight:  # one at a time: no helper thread
                    outcome, rtt = self._timed_send(batch)
                    self.limiter.note_in_flight(1)
                    self.limiter.on_response(rtt, ok=outcome.ok)
                    return outcome
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, "edgebuf-drain")
                self._in_flight.add(self._pool.submit(self._timed_send, batch))
            self.limiter.note_in_flight(len(self._in_flight))
            if not self._in_flight:
                if self._active.is_set():
                    self._active.clear()
                    log.info("recovery complete: no pending records left")
                return None
            done, _ = wait(self._in_flight, return_when=FIRST_COMPLETED)
        return self._collect(done)

    def _collect(self, done: set[Future]) -> SendOutcome:
        self._in_flight -= done
        total = SendOutcome()
        for future in done:
            outcome, rtt = future.result()
            self.limiter.on_response(rtt, ok=outcome.ok)
            total.sent += outcome.sent
            total.failed += outcome.failed
            total.released += outcome.released
            total.requests += outcome.requests
            total.retry = total.retry or outcome.retry
        return total

    def wait_in_flight(self, timeout: float | None = None) -> bool:
        """Wait for the requests in flight to be answered (and their rows settled)."""
        if not self._in_flight:
            return True
        _, pending = wait(self._in_flight, timeout=timeout)
        return not pending

    def close(self, timeout: float = 5.0) -> None:
        """Let the requests in flight settle (bounded), release the helper threads."""
        self.wait_in_flight(timeout)
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
        self.wait_in_flight()  # what is still in flight settles before we report
        rest = self._collect({f for f in self._in_flight if f.done()})
        report.sent += rest.sent
        report.failed += rest.failed
        report.requests += rest.requests
        report.seconds = self.clock.monotonic() - start
        return report
