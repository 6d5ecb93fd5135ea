"""The simulation's invariants: what is checked after every step of ``edgebuf simulate``
(see ``edgebuf.lab.simulate`` for the list and the liveness bound), and its results."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgebuf.lab.simconst import (
    DEVICE,
    RECOUNT_EVERY,
    WATCHDOG_S,
)


@dataclass
class Violation:
    invariant: str
    step: int
    t: float  # virtual seconds since the start
    detail: str
    trace: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "step": self.step, "t": round(self.t, 3),
                "detail": self.detail, "trace": self.trace}  # fmt: skip


@dataclass
class SeedResult:
    seed: int
    days: float
    steps: int
    summary: dict[str, Any]
    violations: list[Violation]
    trace_digest: str
    wall_s: float = 0.0
    cpu_s: float = 0.0  # process time: what the run costs on an idle machine

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "days": self.days, "ok": self.ok, "steps": self.steps,
                "summary": self.summary, "trace_digest": self.trace_digest,
                "violations": [v.as_dict() for v in self.violations],
                "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3)}  # fmt: skip


class Invariants:
    """Mixed into ``World``: the checks, run after every step."""

    def _bounded(self, invariant: str, call: Callable[[], Any], timeout: float) -> Any:
        """Run ``call`` (a flush or close) with a real-time watchdog: it must return without
        another thread moving the virtual clock (nothing else runs in the simulation)."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = call()
            except BaseException as exc:  # reported below
                box["error"] = exc

        thread = threading.Thread(target=target, daemon=True, name="sim-watchdog")
        thread.start()
        seen, still = self.now(), time.monotonic()
        while thread.is_alive():
            thread.join(0.01)
            if self.now() != seen:
                seen, still = self.now(), time.monotonic()
            elif time.monotonic() - still > WATCHDOG_S:
                self.violate(invariant, f"did not return: the virtual clock stood still for "
                             f"{WATCHDOG_S}s of real time (timeout={timeout:g} virtual s)")  # fmt: skip
                self.clock.advance(timeout + 1.0)  # frees a call that waits on the clock
                thread.join(10.0)
                break
        if "error" in box:
            self.violate(invariant, f"raised {type(box['error']).__name__}: {box['error']}")
        self.note(f"{invariant.split('-')[0]}() -> {box.get('result')!r}")
        return box.get("result")

    # ------------------------------------------------------------------ checks
    def check(self, forced: bool = False, read: bool = True) -> None:
        if self.cloud.duplicates:
            self.violate("delivered-once", f"{self.cloud.duplicates} records stored twice")
        if self.cloud.seq_conflicts:
            self.violate("seq-monotonic", self.cloud.seq_conflicts[0])
        if self.client is None or self.checker is None:
            return
        if not read:
            self.check_liveness()
            return
        version = self.checker.execute("PRAGMA data_version").fetchone()[0]
        if version != self.data_version:
            self.data_version = version
            self.oldest = None  # unknown: read again
            self.changes += 1
            self.read_dropped()
            if forced or self.changes % RECOUNT_EVERY == 0:
                self.recount()
        elif forced:
            self.recount()
        self.check_liveness()

    def read_dropped(self) -> None:
        """Audit rows written since the last look (after every commit: an eviction's own
        rows stay listed until a later eviction folds them into ``dropped_summary``)."""
        assert self.checker is not None
        for row_id, rid in self.checker.execute(
            "SELECT id, record_id FROM dropped_records WHERE id > ? ORDER BY id",
            (self.dropped_cursor,),
        ):
            self.dropped.add(rid)
            self.dropped_cursor = row_id

    def recount(self) -> None:
        assert self.client is not None and self.checker is not None
        store, c = self.client.store, self.checker
        meta = store.metadata()
        rows = dict(c.execute("SELECT status, count(*) FROM prediction_buffer GROUP BY status"))
        n, chars, top = c.execute(
            "SELECT count(*), coalesce(sum(length(prediction_data)), 0), coalesce(max(seq), 0)"
            " FROM prediction_buffer"
        ).fetchone()
        self.read_dropped()
        reasons = dict(
            c.execute(
                "SELECT reason, sum(n) FROM (SELECT reason, count(*) AS n FROM dropped_records"
                " GROUP BY reason UNION ALL SELECT reason, records FROM dropped_summary)"
                " GROUP BY reason"
            )
        )
        n_dropped = reasons.pop("capacity", 0)
        if reasons:
            self.violate(
                "counters", f"dropped_records with reasons no counter accounts for: {reasons}"
            )
        g = lambda key: int(meta.get(key, 0))  # noqa: E731
        if n and self.overhead is None:
            self.overhead = (g("live_bytes") - chars) // n
        checks = [
            ("total_buffered", g("total_buffered"), len(self.logged)),  # calls that returned
            ("rows", n, g("total_buffered") - g("total_cleaned") - g("evicted_capacity")),
            ("sent rows", rows.get("sent", 0), g("total_sent") - g("total_cleaned")),
            ("failed rows", rows.get("failed", 0), g("total_failed") - g("total_requeued")),
            ("dropped (capacity)", n_dropped, g("evicted_capacity")),
            ("live_bytes", g("live_bytes"), chars + n * (self.overhead or 0)),
            ("rejected_full", g("rejected_full"), self.refused["BufferFullError"]),
        ]
        source = {"total_buffered": "log calls returned", "rejected_full": "log calls refused"}
        for name, got, want in checks:
            if got != want:
                self.violate("counters", f"{name}: metadata says {got}, but "
                             f"{want} {source.get(name, 'by a recount of the rows')}")  # fmt: skip
        seq = max((int(v) for k, v in meta.items() if k.endswith(f":{DEVICE}")), default=0)
        cloud_top = self.cloud.max_seq.get(DEVICE, 0)
        if seq < max(self.hwm, top, cloud_top):
            self.violate("seq-monotonic", f"sequence high-water mark {seq}, but {self.hwm} was "
                         f"reached, the rows hold {top} and the cloud has seen {cloud_top}")  # fmt: skip
        self.hwm = max(self.hwm, seq)
        cap = self.settings["capacity_bytes"]
        size = store.size_info()["file_bytes"]
        if g("live_bytes") > cap or size > 2 * cap + 256 * 1024:
            self.violate(
                "capacity", f"live bytes {g('live_bytes')}, file {size} bytes, capacity {cap}"
            )

    def check_liveness(self) -> None:
        now = self.now()
        healthy = max(self.disturbed_at, self.cloud.last_fault_at)
        if self.cloud.impaired() or now < self.disk_full_until or now - healthy <= self.bound:
            return
        assert self.checker is not None
        if self.oldest is None and now < self.next_liveness_read:
            return  # read at most 8 times per bound: a stall is seen at most B/8 late
        if self.oldest is None:
            self.next_liveness_read = now + self.bound / 8
            self.oldest = (
                self.checker.execute(
                    "SELECT record_id, status FROM prediction_buffer"
                    " WHERE status IN ('pending', 'sending') ORDER BY id LIMIT 1"
                ).fetchone()
                or ()
            )
        row = self.oldest
        if not row:
            return
        since = max(self.logged.get(row[0], self.t0), healthy)
        if now - since > self.bound:
            seq, tries, error = self.checker.execute(
                "SELECT seq, retry_count, last_error FROM prediction_buffer WHERE record_id = ?",
                (row[0],),
            ).fetchone()
            self.violate("liveness", f"seq {seq} is still {row[1]} {now - since:.0f}s after the "
                         f"cloud became healthy (bound {self.bound:.0f}s; {tries} retries, "
                         f"last error {error!r})")  # fmt: skip

    def check_vanished(self) -> None:
        """Every record whose log returned is in the buffer, the cloud or dropped_records."""
        assert self.checker is not None
        held = {rid for (rid,) in self.checker.execute("SELECT record_id FROM prediction_buffer")}
        self.read_dropped()
        held |= self.dropped
        lost = [r for r in self.logged if r not in held and (DEVICE, r) not in self.cloud.stored]
        if lost:
            self.violate("no-loss", f"{len(lost)} records whose log returned are gone")

    def final_check(self) -> None:
        if self.client is None:
            self.start_client()
        if self.client is None:
            return
        self.check_vanished()
        must = [r for r in self.logged if r not in self.dropped]
        missing = sum(1 for r in must if self.cloud.stored[(DEVICE, r)] == 0)
        if missing:
            self.violate("no-loss", f"{missing} of {len(must)} records never reached the cloud")
        unsent = self.client.store.has_unsent()
        if unsent:
            self.violate("liveness", "records still unsent at the end of the healthy period")
        client = self.client
        result = self._bounded("flush-returns", lambda: client.flush(timeout=30.0), 30.0)
        if result is not True and not unsent:
            self.violate("flush-returns", f"flush() -> {result!r} with nothing left to send")

    # ------------------------------------------------------------------ the event loop
