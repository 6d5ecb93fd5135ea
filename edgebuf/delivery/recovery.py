"""BufferRecoveryManager: the backlog lane, draining pending rows oldest-first.

Whether there is a backlog is read from SQLite on every pass of the shipping loop (an index
probe: ``has_backlog``), never kept in a flag: rows released by a failed send, requeued by
``edgebuf requeue-failed`` from another process, re-queued by reconciliation or found on
disk at start-up are all drained the same way, with no event to miss. The lane sends oldest-first in large batches (``backfill_batch_size``), with up
to ``limiter.limit`` requests in flight: each in-flight slot is a worker that claims a
batch, sends it and, when the answer is good, claims the next at once, so the window
stays full while the shipping loop serves new records on the live lane (fresh
predictions are not stuck behind hours of backlog, and a live request's round trip does
not empty the pipe). ``drain_step`` starts the workers, hands the shipping loop what
they delivered, and returns None when nothing is pending and nothing is in flight. A
failed request stops every worker from taking more (those in flight finish) and goes
back to the shipping loop, whose backoff honours ``Retry-After`` (429/503), so the
drain paces itself to what the cloud can take. ``on_answer`` (set by the client to the
shipping loop's ``wake``) is called from a worker when an answer is ready to hand back.

How many in flight is ``edgebuf.delivery.concurrency``'s decision: ``AdaptiveConcurrency``
(the default) grows the window while round trips stay flat, which a long, thin uplink
needs (its bandwidth-delay product is tens of batches), and shrinks it on 429/503 or
rising round trips, so a busy cloud database is not queued into the ground;
``FixedConcurrency`` keeps it constant. Each request still claims, sends and settles its
own rows through ``Sender`` (exactly once is theirs, not this module's).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgebuf.clock import Clock
from edgebuf.delivery.concurrency import AdaptiveConcurrency, FixedConcurrency
from edgebuf.delivery.policy import Verdict, classify
from edgebuf.delivery.sender import Sender, SendOutcome
from edgebuf.delivery.transport import SendResult
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


class _Gate:
    """The backlog lane's view of the transport (the client's, looked up per request).

    A retryable answer closes the lane's gate *before* the sender puts that batch's rows
    back to pending, so no other worker can claim them again ahead of the backoff."""

    def __init__(self, recovery: BufferRecoveryManager) -> None:
        self._recovery = recovery

    def send(self, body: bytes) -> SendResult:
        try:
            result = self._recovery.sender.transport.send(body)
        except Exception as exc:  # a buggy Transport: a network error, gate closed first
            result = SendResult(None, error=f"transport error: {type(exc).__name__}: {exc}")
        if classify(result) is Verdict.RETRY:
            with self._recovery._cond:
                self._recovery._hold = True
        return result

    def probe(self) -> bool:
        return self._recovery.sender.transport.probe()

    def close(self) -> None:
        pass


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
        self._cond = threading.Condition()  # guards the fields below and the limiter
        self._workers = 0  # workers alive, each with at most one request in flight
        self._sending = 0  # requests in flight now
        self._results: collections.deque[SendOutcome] = collections.deque()
        self._hold = False  # a request failed: take no more until the next drain_step
        self._closing = False
        self._error: BaseException | None = None
        # The lane's own Sender (same store, same stats) sends through the gate above.
        self._lane = Sender(store, _Gate(self), clock, faults=sender.faults)
        self._lane.stats = sender.stats
        self._draining = False  # for the log and the count only; SQLite decides what to send
        self.recoveries_started = 0
        self.on_answer: Callable[[], None] | None = None  # the client: the loop's wake

    @property
    def active(self) -> bool:
        """Whether any record waits to be sent or a backlog request is in flight (read from
        the buffer, not remembered)."""
        return bool(self._workers or self._results) or self.has_backlog(0)

    def has_backlog(self, live: int) -> bool:
        """Whether more than ``live`` records are pending: the newest ``live`` belong to the
        live lane's next batch, anything beyond is backlog. Costs at most ``live + 1`` index
        entries, so the shipping loop asks on every pass."""
        return self.store.count_pending(at_most=live + 1) > live

    def needs_pass(self, live: int) -> bool:
        """Whether the shipping loop should call ``drain_step`` now: a backlog on disk, or
        backlog requests in flight whose answers it must settle."""
        with self._cond:
            busy = bool(self._workers or self._results or self._error is not None)
        return busy or self.has_backlog(live)

    def start_recovery(self) -> None:
        """Kept for the design's API: the shipping loop drains any backlog it finds on disk
        at every pass, so there is nothing to switch on; this only wakes it."""
        if self.on_answer is not None:
            self.on_answer()

    def stop_recovery(self) -> None:
        """Kept for the design's API (see ``start_recovery``)."""

    @property
    def in_flight(self) -> int:
        """Backlog requests sent and not yet answered."""
        return self._sending

    def _send_one(self) -> bool | None:
        """Claim and send one batch: None if there was nothing to claim, else whether the
        answer was good. The outcome goes to ``_results`` for the next ``drain_step``."""
        with self._cond:  # the gate is checked and the batch claimed as one step
            if self._hold or self._closing or self._workers > self.limiter.limit:
                return None
            batch = self.store.claim(self.batch_size)
            if batch is None:
                return None
            self._sending += 1
            self.limiter.note_in_flight(self._sending)
        t0 = self.clock.monotonic()
        try:
            outcome = self._lane.send_batch(batch)
        finally:
            with self._cond:
                self._sending -= 1
        rtt = (self.clock.monotonic() - t0) / max(1, outcome.requests)
        with self._cond:
            self.limiter.on_response(rtt, ok=outcome.ok)
            self._hold = self._hold or not outcome.ok
            self._results.append(outcome)
            self._cond.notify_all()
        if self.on_answer is not None:
            self.on_answer()  # wake the shipping loop: there is an answer to hand back
        return outcome.ok

    def _work(self) -> None:
        """One slot of the window: claim, send, settle, repeat while answers are good."""
        try:
            while True:
                if not self._send_one():
                    return
        except BaseException as exc:  # handed to the shipping loop, whose handler recovers
            with self._cond:
                self._hold = True
                self._error = self._error or exc
        finally:
            with self._cond:
                self._workers -= 1
                self._cond.notify_all()

    def drain_step(self, max_wait: float = 0.5) -> SendOutcome | None:
        """Fill the window, wait (up to ``max_wait`` s) for an answer, return what the
        answers since the last step delivered. Answers that arrived while the shipping loop
        was busy elsewhere are handed back without waiting.

        Returns None when no answer came in time (the next answer wakes the loop: the live
        lane is never held up behind a slow backlog request) or when nothing is pending and
        nothing is in flight."""
        with self._cond:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if not self._results:  # the loop is past any backoff: open the gate again
                self._hold = False
                self._start_workers()
                self._cond.wait_for(
                    lambda: self._results or not self._workers or self._error is not None,
                    max_wait,
                )
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
            if not self._results and self._workers:
                return None  # still in flight
            if not self._results:  # every worker found nothing to claim
                if self._draining:
                    self._draining = False
                    log.info("recovery complete: no pending records left")
                return None
            if not self._draining:
                self._draining = True
                self.recoveries_started += 1
                log.info("recovery started: draining pending records")
            return self._collect()

    def _start_workers(self) -> None:
        if self.limiter.limit == 1 and not self._workers:
            # One at a time: send in the calling thread, as a plain loop would.
            self._workers += 1
            self._cond.release()
            try:
                self._send_one()
            finally:
                self._cond.acquire()
                self._workers -= 1
            return
        while self._workers < self.limiter.limit and not self._closing:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, "edgebuf-drain")
            self._workers += 1
            self._pool.submit(self._work)

    def _collect(self) -> SendOutcome:
        total = SendOutcome()
        while self._results:
            outcome = self._results.popleft()
            total.sent += outcome.sent
            total.failed += outcome.failed
            total.released += outcome.released
            total.requests += outcome.requests
            total.retry = total.retry or outcome.retry
        return total

    def wait_in_flight(self, timeout: float | None = None) -> bool:
        """Stop taking more backlog and wait for the requests in flight to be answered
        (their rows settled). True if none is left in flight."""
        with self._cond:
            self._hold = True
            return self._cond.wait_for(lambda: not self._workers, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Let the requests in flight settle (bounded), release the helper threads."""
        with self._cond:
            self._closing = True
        self.wait_in_flight(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, *, max_seconds: float | None = None) -> RecoveryReport:
        """Drain synchronously in the calling thread until nothing is pending, a send fails,
        or ``max_seconds`` pass. For tools and tests; the client drains in its own thread."""
        report = RecoveryReport()
        start = self.clock.monotonic()
        while True:
            outcome = self.drain_step()
            if outcome is None and self.active:
                outcome = SendOutcome()  # nothing answered yet: keep waiting
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
        with self._cond:
            rest = self._collect()
        report.sent += rest.sent
        report.failed += rest.failed
        report.requests += rest.requests
        report.seconds = self.clock.monotonic() - start
        return report
