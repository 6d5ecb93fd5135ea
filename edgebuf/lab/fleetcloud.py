"""``SimulatedCloud``: a Transport on a FakeClock with outages and a throughput limit, for the
fleet-sizing simulation."""

from __future__ import annotations

import gzip
import json

from edgebuf.clock import FakeClock
from edgebuf.delivery.transport import SendResult


class SimulatedCloud:
    """A Transport on a FakeClock: down inside ``outages``, otherwise it stores each record
    once by record id and takes ``rtt + n / records_per_s`` virtual seconds per request,
    so the edge can never push more than ``records_per_s``."""

    def __init__(
        self,
        clock: FakeClock,
        records_per_s: float,
        *,
        outages: list[tuple[float, float]] = (),  # type: ignore[assignment]
        rtt: float = 0.05,
        gzip_every: int = 10,
    ) -> None:
        self.clock = clock
        self.records_per_s = records_per_s
        self.outages = list(outages)
        self.rtt = rtt
        self.gzip_every = gzip_every
        self.stored: set[str] = set()
        self.requests = self.received = self.duplicates = self.refused = 0
        self.body_bytes = self.gzip_bytes = self.gzip_records = 0

    def is_up(self) -> bool:
        now = self.clock.monotonic()
        return not any(start <= now < end for start, end in self.outages)

    def send(self, body: bytes) -> SendResult:
        if not self.is_up():
            self.refused += 1
            return SendResult(None, error="network error: simulated outage")
        records = json.loads(body)["records"]
        n = len(records)
        self.clock.advance(self.rtt + n / self.records_per_s)
        self.requests += 1
        self.received += n
        self.body_bytes += len(body)
        if self.requests % self.gzip_every == 1 or self.gzip_every == 1:
            self.gzip_bytes += len(gzip.compress(body, compresslevel=1))
            self.gzip_records += n
        accepted = 0
        for rec in records:
            if rec["record_id"] in self.stored:
                self.duplicates += 1
            else:
                self.stored.add(rec["record_id"])
                accepted += 1
        return SendResult(200, accepted=accepted, duplicates=n - accepted)

    def probe(self) -> bool:
        return self.is_up()

    def close(self) -> None:
        pass
