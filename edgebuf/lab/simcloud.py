"""The simulated cloud of ``edgebuf simulate``: a Transport on a FakeClock with seeded faults.

It stores each record once by (device, record id), the way the cloud's ``POST /log`` does,
and keeps what the invariants need: how many times each record was stored (a duplicate is
a count above one), and which record each (device, seq) was first stored as (a different
record under a seen sequence number is a repeated or restarted sequence).

Faults are windows of virtual time set by the simulation (``outage_until``, ``flaky_until``
with a per-request fault probability, ``poison_until``) plus one-shot crashes of the edge
process during a request (``crash_next``). Every fault answer is drawn from the cloud's own
``random.Random``, so a seed replays exactly. ``planted`` makes the cloud itself wrong (for
the tests of the checkers): ``"drop"`` answers 200 once without storing, ``"store-twice"``
stores a batch twice, ``"stall"`` refuses every batch holding seq 3 without calling it a
fault.
"""

from __future__ import annotations

import collections
import json
import random
from collections.abc import Callable

from edgebuf import FakeClock, SendResult

# Exceptions a buggy custom Transport might raise (anything but BaseException subclasses).
TRANSPORT_EXCEPTIONS: tuple[type[Exception], ...] = (
    RuntimeError,
    KeyError,
    ValueError,
    TypeError,
    OSError,
    ZeroDivisionError,
    AttributeError,
)
FLAKY_KINDS = ("network", "timeout", "5xx", "429", "drop-ack", "exception", "413")
RETRY_AFTER_MAX = 120.0  # the longest Retry-After the simulated cloud sends (seconds)


class SimCrash(BaseException):
    """The edge process dies here. A BaseException, so no ``except Exception`` in edgebuf
    can swallow it: it unwinds to the simulation, which drops the process's state."""


class SimCloud:
    """A Transport whose answers the simulation scripts by windows of virtual time."""

    def __init__(
        self,
        clock: FakeClock,
        rng: random.Random,
        *,
        request_timeout: float,
        rtt: float = 0.05,
        records_per_s: float = 5_000.0,
        planted: str | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.request_timeout = request_timeout
        self.rtt = rtt
        self.records_per_s = records_per_s
        self.planted = planted
        self.note = note or (lambda _msg: None)
        self.outage_until = self.flaky_until = self.poison_until = 0.0
        self.flaky_p = 0.0
        self.poison_mod = 7
        self.crash_next: str | None = None  # "before" / "after" the cloud commits
        self.stored: collections.Counter[tuple[str, str]] = collections.Counter()
        self.seq_owner: dict[tuple[str, int], str] = {}
        self.max_seq: dict[str, int] = {}
        self.seq_conflicts: list[str] = []
        self.duplicates = 0  # records stored more than once
        self.requests = self.faults = self.probes = 0
        self.last_fault_at = -1.0  # monotonic time of the last answer that was not a 2xx
        self._planted_done = False

    # ------------------------------------------------------------------ state
    def now(self) -> float:
        return self.clock.monotonic()

    def is_down(self) -> bool:
        return self.now() < self.outage_until

    def impaired(self) -> bool:
        """Whether any cloud-side fault window is open now."""
        now = self.now()
        return now < max(self.outage_until, self.flaky_until, self.poison_until)

    # ------------------------------------------------------------------ Transport
    def _fault(self, why: str) -> None:
        self.faults += 1
        self.last_fault_at = self.now()
        self.note(f"cloud: {why}")

    def _store(self, device: str, records: list[dict]) -> int:
        accepted = 0
        for rec in records:
            key = (device, rec["record_id"])
            first = key not in self.stored
            if first or self.planted == "store-twice" and not self._planted_done:
                self.stored[key] += 1
                accepted += first
                self.duplicates += not first
            if not first:
                continue
            seq = int(rec["seq"])
            owner = self.seq_owner.setdefault((device, seq), rec["record_id"])
            if owner != rec["record_id"]:
                self.seq_conflicts.append(
                    f"seq {seq} of {device} arrived as a second record (max seen "
                    f"{self.max_seq.get(device, 0)})"
                )
            self.max_seq[device] = max(self.max_seq.get(device, 0), seq)
        return accepted

    def send(self, body: bytes) -> SendResult:
        parsed = json.loads(body)
        device, records = parsed["device_id"], parsed["records"]
        self.requests += 1
        if self.crash_next is not None:
            when, self.crash_next = self.crash_next, None
            if when == "after":
                self._store(device, records)
            self.note(f"edge process killed during a request of {len(records)} ({when} commit)")
            raise SimCrash(f"killed during send ({when} the cloud commits)")
        if self.is_down():
            self._fault("down: network error")
            return SendResult(None, error="network error: simulated outage")
        self.clock.advance(self.rtt + len(records) / self.records_per_s)
        if self.now() < self.poison_until:
            bad = [r for r in records if int(r["seq"]) % self.poison_mod == 0]
            if bad:
                self._fault(f"422 for {len(records)} records ({len(bad)} poison)")
                return SendResult(422, error="HTTP 422: simulated poison record")
        if self.now() < self.flaky_until and self.rng.random() < self.flaky_p:
            return self._flaky(device, records)
        if self.planted == "stall" and any(int(r["seq"]) == 3 for r in records):
            return SendResult(503, error="HTTP 503: planted, never counted as a fault")
        if self.planted == "drop" and not self._planted_done:
            self._planted_done = True
            self.note(f"PLANTED: 200 for {len(records)} records, none stored")
            return SendResult(200, accepted=len(records), duplicates=0)
        accepted = self._store(device, records)
        if self.planted == "store-twice" and not self._planted_done:
            self._store(device, records)
            self._planted_done = True
            self.note(f"PLANTED: {len(records)} records stored twice")
        return SendResult(200, accepted=accepted, duplicates=len(records) - accepted)

    def _flaky(self, device: str, records: list[dict]) -> SendResult:
        kind = self.rng.choice(FLAKY_KINDS)
        n = len(records)
        if kind == "network":
            self._fault(f"network error ({n} records)")
            return SendResult(None, error="network error: simulated reset")
        if kind == "timeout":
            self.clock.advance(self.request_timeout)
            self._fault(f"timeout after {self.request_timeout:g} s ({n} records)")
            return SendResult(None, error="timeout: simulated")
        if kind == "5xx":
            status = self.rng.choice((500, 502, 503, 504))
            self._fault(f"HTTP {status} ({n} records)")
            return SendResult(status, error=f"HTTP {status}: simulated")
        if kind == "429":
            wait = round(self.rng.uniform(0.0, RETRY_AFTER_MAX), 1)
            self._fault(f"HTTP 429 Retry-After {wait:g} ({n} records)")
            return SendResult(429, retry_after=wait, error="HTTP 429: simulated")
        if kind == "drop-ack":
            self._store(device, records)
            self._fault(f"committed {n} records, acknowledgement lost")
            if self.rng.random() < 0.5:
                return SendResult(None, error="network error: simulated lost ack")
            return SendResult(503, error="HTTP 503: simulated lost ack")
        if kind == "413" and n > 1:
            self._fault(f"HTTP 413 for {n} records")
            return SendResult(413, error="HTTP 413: simulated")
        if kind == "413":
            return SendResult(200, accepted=self._store(device, records), duplicates=0)
        exc = self.rng.choice(TRANSPORT_EXCEPTIONS)
        self._fault(f"transport raised {exc.__name__} ({n} records)")
        raise exc(f"simulated bug in a custom transport ({exc.__name__})")

    def probe(self) -> bool:
        self.probes += 1
        return not self.is_down()

    def close(self) -> None:
        pass
