"""Sender: one delivery attempt of a claimed batch, and what it does to the rows.

It builds the ``POST /log`` body, asks the transport, classifies the answer with
``policy.classify`` and settles every row in the store: acknowledged rows become
``sent``, rows of a retryable failure go back to ``pending``, and a rejected batch is
bisected so that only the records the cloud refuses individually are dead-lettered.
A record is dead-lettered only on positive evidence (``policy``'s table); a 2xx marks rows
sent only when it is the cloud's acknowledgement of that very batch and all its records.
Each failure is reported to the ``FaultLog`` (status, one log line per change).
Nothing here sleeps or loops over time; the shipping loop owns pacing.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field

from edgebuf.clock import Clock
from edgebuf.delivery.policy import Verdict, classify, fault_kind
from edgebuf.delivery.state import NOT_ACK, FaultLog
from edgebuf.delivery.transport import SendResult, Transport
from edgebuf.store import Batch, BufferedRecord, LocalBufferManager

log = logging.getLogger("edgebuf.delivery.sender")


@dataclass
class SendOutcome:
    """Totals of one ``send_batch`` call."""

    sent: int = 0
    failed: int = 0
    released: int = 0
    requests: int = 0
    retry: SendResult | None = None  # the failure that stopped the attempt, if any

    @property
    def ok(self) -> bool:
        return self.retry is None


def build_body(device_id: str, batch_id: str, records: list[BufferedRecord]) -> bytes:
    """The wire body; each record's prediction JSON is embedded as stored, not re-parsed."""
    items = ",".join(r.wire_json() for r in records)
    head = f'{{"device_id":"{device_id}","batch_id":"{batch_id}","records":['
    return (head + items + "]}").encode("utf-8")


@dataclass
class DeliveryStats:
    """In-memory delivery facts for status (rates, last success/error). Not data: the
    authoritative counts are in SQLite."""

    clock: Clock
    window: float = 60.0
    last_success: float | None = None  # wall time
    last_error: str | None = None
    last_error_at: float | None = None
    _acks: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_ack(self, n: int) -> None:
        now = self.clock.monotonic()
        with self._lock:
            self._acks.append((now, n))
            self.last_success = self.clock.time()
            self._trim(now)

    def record_error(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            self.last_error_at = self.clock.time()

    def _trim(self, now: float) -> None:
        while self._acks and self._acks[0][0] < now - self.window:
            self._acks.popleft()

    def send_rate(self) -> float:
        """Records acknowledged per second over the last ``window`` seconds."""
        now = self.clock.monotonic()
        with self._lock:
            self._trim(now)
            total = sum(n for _, n in self._acks)
        return total / self.window


class Sender:
    """Delivers claimed batches through a transport and settles their rows."""

    def __init__(
        self,
        store: LocalBufferManager,
        transport: Transport,
        clock: Clock,
        *,
        faults: FaultLog | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.stats = DeliveryStats(clock)
        self.faults = faults if faults is not None else FaultLog(clock)

    def send_batch(self, batch: Batch) -> SendOutcome:
        """Try to deliver every row of ``batch`` once; every row ends settled (never left
        ``sending``): whatever goes wrong, even a bug in a custom transport or a disk that
        refuses the settle, the rows not settled go back to ``pending`` under this claim."""
        try:
            return self._send(batch)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("delivery attempt failed unexpectedly; its rows return to pending")
            self.stats.record_error(error)
            released = self.store.release_claim(batch.claim_id, error)
            return SendOutcome(released=released, retry=SendResult(None, error=error))

    def _post(self, body: bytes) -> SendResult:
        try:
            return self.transport.send(body)
        except Exception as exc:  # a Transport must not raise; a buggy one is a network error
            log.warning("transport raised %s: %s", type(exc).__name__, exc)
            return SendResult(None, error=f"transport error: {type(exc).__name__}: {exc}")

    def _send(self, batch: Batch) -> SendOutcome:
        outcome = SendOutcome()
        claim = batch.claim_id
        by_device: dict[str, list[BufferedRecord]] = collections.defaultdict(list)
        for rec in batch.records:
            by_device[rec.device_id].append(rec)
        work = [(dev, recs, claim, False) for dev, recs in by_device.items()]
        while work:
            device, records, batch_id, deferred = work.pop()
            result = self._post(build_body(device, batch_id, records))
            outcome.requests += 1
            verdict = classify(result)
            if verdict is Verdict.ACK:
                result = _check_ack(result, batch_id, len(records))
                verdict = classify(result)
            if verdict is Verdict.SPLIT and len(records) == 1 and result.refused is None:
                # Too large alone, not in the cloud's words: dead-letter it only once the rest
                # of this batch went through (the path works, this record is at fault). Try
                # the rest first; with no such evidence it is a retryable fault.
                if not outcome.sent and work and not deferred:
                    work.insert(0, (device, records, f"{batch_id}-z", True))
                    continue
                if not outcome.sent:
                    verdict = Verdict.RETRY
            ids = [r.id for r in records]
            if verdict is Verdict.ACK:
                outcome.sent += self.store.mark_sent(ids, claim_id=claim)
                self.stats.record_ack(len(ids))
                self.faults.clear()
            elif verdict is Verdict.RETRY:
                error = result.error or f"HTTP {result.status}"
                self.stats.record_error(error)
                self.faults.report(fault_kind(result), error)
                rest = ids + [r.id for _, recs, _, _ in work for r in recs]
                outcome.released += self.store.release(rest, error, claim_id=claim)
                outcome.retry = result
                return outcome
            elif len(records) > 1:  # SPLIT or REJECT: bisect
                mid = len(records) // 2
                work.append((device, records[mid:], f"{batch_id}-b", False))
                work.append((device, records[:mid], f"{batch_id}-a", False))
            else:
                error = result.error or f"HTTP {result.status}"
                log.error("record %s dead-lettered: %s", records[0].record_id, error)
                self.stats.record_error(error)
                outcome.failed += self.store.mark_failed(ids, error, claim_id=claim)
        return outcome


def _check_ack(result: SendResult, batch_id: str, n: int) -> SendResult:
    """The acknowledgement itself, or a not-acknowledged result when it names another batch
    or counts other than the ``n`` records sent (nothing then proves them stored)."""
    assert result.accepted is not None and result.duplicates is not None
    problem = None
    if result.batch_id is not None and result.batch_id != batch_id:
        problem = f"acknowledges batch {result.batch_id!r}, not {batch_id!r}"
    elif result.accepted + result.duplicates != n:
        problem = (
            f"acknowledges {result.accepted} accepted + {result.duplicates} duplicates"
            f" for a batch of {n}"
        )
    if problem is None:
        return result
    return SendResult(
        result.status,
        error=f"HTTP {result.status} not a valid acknowledgement: {problem}",
        fault=NOT_ACK,
    )
