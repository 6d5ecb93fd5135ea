"""Test helpers shipped with the package (like httpx's MockTransport).

``ScriptedCloud`` is a Transport that behaves like the cloud in memory: it stores each
record once by (device, record id), answers scripted failures first, and can commit a
batch and then "lose" the acknowledgement. Use it with ``FakeClock`` to test policy
without sleeping or sockets; integration tests use the real cloud service instead.
"""

from __future__ import annotations

import collections
import gzip
import json
import threading
from dataclasses import dataclass

from edgebuf.delivery.transport import SendResult

# Client settings for drills and tests against a real cloud: a fault is noticed and handled
# in about a second instead of minutes (the defaults are the design's 10 s / 30 s / 5 tries).
FAST_SETTINGS: dict[str, float] = {
    "batch_timeout": 0.2,
    "monitor_interval": 0.3,
    "health_timeout": 1.0,
    "request_timeout": 2.0,
    "max_retries": 2,
    "backoff_base": 0.05,
    "backoff_cap": 0.3,
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: an HTTP status (None = network error), optional Retry-After,
    and ``commit=True`` to store the batch before failing (a lost acknowledgement).

    ``refused`` makes an error the cloud's own (its body's ``refused``: "record", "batch",
    ...); without it a scripted 4xx is a proxy's answer. ``ack=False`` makes a 2xx that is
    not the cloud's acknowledgement (a captive portal's page): nothing is stored."""

    status: int | None
    retry_after: float | None = None
    commit: bool = False
    reject_record_ids: frozenset[str] = frozenset()
    refused: str | None = None
    ack: bool = True


class ScriptedCloud:
    """An in-memory cloud implementing the Transport protocol."""

    def __init__(self, replies: list[Reply | int | None] | None = None, *, up: bool = True):
        self.replies: collections.deque[Reply] = collections.deque(
            r if isinstance(r, Reply) else Reply(r) for r in (replies or [])
        )
        self.up = up
        self.stored: dict[tuple[str, str], dict] = {}
        self.requests: list[dict] = []  # every parsed body, in order
        self.statuses: list[int | None] = []
        self.poison: set[str] = set()  # record ids the cloud always refuses (422)
        self.max_records: int | None = None  # larger batches get 413
        self.probes = 0
        self._lock = threading.Lock()

    def script(self, *replies: Reply | int | None) -> None:
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def _store(self, body: dict) -> tuple[int, int]:
        accepted = dup = 0
        for rec in body["records"]:
            key = (body["device_id"], rec["record_id"])
            if key in self.stored:
                dup += 1
            else:
                self.stored[key] = rec
                accepted += 1
        return accepted, dup

    def send(self, body: bytes) -> SendResult:
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        parsed = json.loads(body)
        with self._lock:
            self.requests.append(parsed)
            reply = self.replies.popleft() if self.replies else Reply(200)
            ids = {r["record_id"] for r in parsed["records"]}
            if reply.status == 200 and self.max_records and len(ids) > self.max_records:
                reply = Reply(413, refused="batch")
            if reply.status == 200 and ids & (self.poison | reply.reject_record_ids):
                reply = Reply(422, refused="record")
            self.statuses.append(reply.status)
            if reply.status is not None and 200 <= reply.status < 300 and reply.ack:
                accepted, dup = self._store(parsed)
                return SendResult(
                    reply.status, batch_id=parsed["batch_id"], accepted=accepted, duplicates=dup
                )
            if reply.commit:
                self._store(parsed)
            error = "network error: scripted" if reply.status is None else f"HTTP {reply.status}"
            return SendResult(
                reply.status, retry_after=reply.retry_after, error=error, refused=reply.refused
            )

    def probe(self) -> bool:
        self.probes += 1
        return self.up

    def watermark(self, device_id: str, *, from_seq: int, limit: int) -> dict | None:
        """The cloud's ``GET /devices/{id}/watermark`` answer, from what it stores."""
        if not self.up:
            return None
        with self._lock:
            seqs = sorted({r["seq"] for (dev, _), r in self.stored.items() if dev == device_id})
        contiguous = 0
        for seq in seqs:
            if seq != contiguous + 1:
                break
            contiguous = seq
        top = seqs[-1] if seqs else 0
        missing: list[list[int]] = []
        expected = max(from_seq, contiguous + 1)
        for seq in seqs:
            if seq < expected:
                continue
            if seq > expected:
                missing.append([expected, seq - 1])
            expected = seq + 1
        complete = len(missing) <= limit
        return {"device_id": device_id, "contiguous_through": contiguous, "max_seq": top,
                "count": len(seqs), "missing": missing[:limit], "complete": complete}  # fmt: skip

    def snapshot(self) -> dict[tuple[str, str], dict]:
        """A copy of what is stored (a backup), for ``restore``."""
        with self._lock:
            return dict(self.stored)

    def restore(self, backup: dict[tuple[str, str], dict]) -> None:
        """Replace what is stored by an older ``snapshot``: everything since is lost."""
        with self._lock:
            self.stored = dict(backup)

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ assertions
    def received_ids(self) -> collections.Counter[str]:
        """How many times each record id arrived in a request (retries count)."""
        return collections.Counter(
            r["record_id"] for body in self.requests for r in body["records"]
        )

    def acknowledged_ids(self) -> collections.Counter[str]:
        """How many times each record id arrived in a request that was answered 2xx."""
        return collections.Counter(
            r["record_id"]
            for body, status in zip(self.requests, self.statuses)
            if status is not None and 200 <= status < 300
            for r in body["records"]
        )

    def stored_seqs(self, device_id: str) -> list[int]:
        return sorted(r["seq"] for (dev, _), r in self.stored.items() if dev == device_id)
