"""End-to-end reconciliation: a delivered record is safe to delete only once the cloud has
confirmed holding it.

Every ``interval`` seconds (``EDGEBUF_RECONCILE_INTERVAL``) the reconciler asks the cloud,
per device with delivered-but-unconfirmed rows, what it holds
(``GET /devices/{id}/watermark?from_seq=``: a contiguous watermark plus the missing ranges
above it, O(ranges) for the cloud). Each unconfirmed row is then:

* in a range the cloud lacks (its missing ranges, or above its highest seq), acknowledged
  *before* the question was asked -> the cloud lost it (a restore from an older backup, an
  operator's mistake): back to ``pending``, sent again through the normal path,
  de-duplicated by the cloud's (device, record id) key. Confirmed rows are checked too: a
  restore can lose what the cloud once confirmed, for as long as the edge keeps the row;
* not yet confirmed and held by the cloud -> ``confirmed_at`` set; cleanup may then delete
  it after ``cleanup_after_days``;
* not yet decidable (acknowledged after the question, or beyond a truncated answer) ->
  left for the next run.

The first run after start also compares each device's sequence with the cloud's highest
(``max_seq``): if the cloud holds higher numbers than the buffer remembers issuing (records
lost to a power cut in ``normal`` mode after they were delivered), the sequence jumps past
them, so a sequence number is never issued twice for different records. It runs a few
seconds after start; records logged before it could still reuse such a number.

A run handles at most ``budget`` rows (the shipping thread must not stall on a large
first pass after an upgrade); when rows remain, the next run is due in a second.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from edgebuf.clock import Clock
from edgebuf.store import LocalBufferManager

log = logging.getLogger("edgebuf.delivery.reconcile")

CHUNK = 2_000
MAX_SEQ = 2**63 - 1
FIRST_RUN_AFTER = 5.0  # seconds after start: the sequence check should come early


@runtime_checkable
class WatermarkSource(Protocol):
    """A transport that can ask the cloud what it holds for a device."""

    def watermark(self, device_id: str, *, from_seq: int, limit: int) -> dict[str, Any] | None:
        """The cloud's answer (see ``Holdings``), or None if it could not be had now."""


@dataclass(frozen=True)
class Holdings:
    """The cloud's account of one device's sequence numbers."""

    contiguous_through: int
    max_seq: int
    missing: Sequence[tuple[int, int]]
    complete: bool

    @classmethod
    def parse(cls, answer: dict[str, Any]) -> Holdings:
        missing = [(int(a), int(b)) for a, b in answer.get("missing", [])]
        return cls(
            int(answer["contiguous_through"]),
            int(answer["max_seq"]),
            missing,
            bool(answer.get("complete", True)),
        )

    def held(self, seq: int) -> bool | None:
        """True if the cloud holds ``seq``, False if it does not, None if not reported."""
        if seq <= self.contiguous_through:
            return True
        if seq > self.max_seq:
            return False
        if not self.complete and (not self.missing or seq > self.missing[-1][1]):
            return None
        i = bisect.bisect_right(self.missing, (seq, float("inf"))) - 1
        return not (i >= 0 and self.missing[i][0] <= seq <= self.missing[i][1])


@dataclass
class ReconcileReport:
    """What one run did."""

    devices: int = 0
    confirmed: int = 0
    resent: int = 0
    undecided: int = 0
    errors: list[str] = field(default_factory=list)
    more: bool = False  # the budget ran out: rows remain
    sequence_raised: dict[str, int] = field(default_factory=dict)  # device -> cloud's max_seq


class Reconciler:
    """Confirms delivered rows against the cloud; re-queues the ones it lost."""

    def __init__(
        self,
        store: LocalBufferManager,
        source: WatermarkSource,
        clock: Clock,
        *,
        interval: float = 300.0,
        budget: int = 20_000,
    ) -> None:
        self.store = store
        self.source = source
        self.clock = clock
        self.interval = interval
        self.budget = budget
        self.next_due = clock.monotonic() + min(interval, FIRST_RUN_AFTER)
        self._sequences_checked = False
        self.last: ReconcileReport | None = None
        self.last_run_at: float | None = None  # wall time

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def run_once(self) -> ReconcileReport:
        """One pass over every device whose delivered rows this buffer still holds."""
        report = ReconcileReport()
        if not self._sequences_checked:
            self._sequences_checked = self._check_sequences(report)
        budget = self.budget
        for device, lowest in self.store.delivered_devices():
            if budget <= 0:
                report.more = True
                break
            budget -= self._device(device, lowest, budget, report)
        self.last, self.last_run_at = report, self.clock.time()
        delay = 1.0 if report.more else self.interval
        self.next_due = self.clock.monotonic() + delay
        if report.resent:
            log.warning(
                "reconciliation: the cloud no longer holds %d delivered records; sending them again",
                report.resent,
            )
        return report

    def _check_sequences(self, report: ReconcileReport) -> bool:
        done = True
        for device, mine in self.store.sequences().items():
            answer = self.source.watermark(device, from_seq=mine + 1, limit=1)
            if answer is None:
                done = False
                continue
            theirs = int(answer.get("max_seq", 0))
            if self.store.raise_sequence(device, theirs):
                report.sequence_raised[device] = theirs
                log.warning(
                    "the cloud holds %s's sequence numbers up to %d, this buffer only up to %d"
                    " (records lost to a power cut?): continuing from %d",
                    device,
                    theirs,
                    mine,
                    theirs + 1,
                )
        return done

    def _device(self, device: str, lowest: int, budget: int, report: ReconcileReport) -> int:
        """Ask the cloud about every seq from the lowest delivered one this buffer holds;
        send again what it lacks (confirmed rows too: a restore can lose them), confirm the
        rest. Returns the rows looked at."""
        asked_at = self.clock.time()
        answer = self.source.watermark(device, from_seq=lowest, limit=1000)
        if answer is None:
            report.errors.append(f"{device}: the cloud did not answer")
            return 0
        try:
            holdings = Holdings.parse(answer)
        except (KeyError, TypeError, ValueError) as exc:
            report.errors.append(f"{device}: unexpected answer ({exc})")
            return 0
        report.devices += 1
        seen = 0
        # What the cloud lacks: its missing ranges, and everything above its highest seq.
        lacking = [*holdings.missing, (holdings.max_seq + 1, MAX_SEQ)]
        for first, last in lacking:
            while seen < budget:
                ids = self.store.delivered_in(device, first, last, sent_before=asked_at,
                                              limit=min(CHUNK, budget - seen))  # fmt: skip
                if not ids:
                    break
                report.resent += self.store.resend(ids)
                seen += len(ids)
        # What it holds and this buffer has not yet seen confirmed.
        after = lowest - 1
        while seen < budget:
            rows = self.store.unconfirmed(device, after_seq=after, limit=min(CHUNK, budget - seen))
            if not rows:
                return seen
            confirm = []
            for row_id, seq, _sent_at in rows:
                held = holdings.held(seq)
                if held:
                    confirm.append(row_id)
                elif held is None:
                    report.undecided += 1
            report.confirmed += self.store.confirm(confirm)
            seen += len(rows)
            after = rows[-1][1]
        report.more = True
        return seen
