"""``World``: one seeded run of the real client on a virtual clock (``edgebuf.lab.simulate``)."""

from __future__ import annotations

import collections
import contextlib
import math
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

from edgebuf import (
    BufferFullError,
    DiskFullError,
    EdgebufError,
    EnhancedAsyncLoggingClient,
    FakeClock,
)
from edgebuf.lab.invariants import Invariants, SeedResult, Violation  # noqa: F401
from edgebuf.lab.simcloud import (
    RETRY_AFTER_MAX,
    SimCloud,
    SimCrash,
    draw_plan,
    fill_disk,
    hash_str,
    kill_at_file_op,
    lift_disk_full,
    release_lock,
)
from edgebuf.lab.simconst import (
    DAY,
    DEVICE,
    JITTER,
    LIVELOCK_STEPS,
    PASS_S,
    SETTINGS,
    TRACE_LEN,
    WORLD_PLANTS,
)
from edgebuf.lab.simfaults import Faults


class World(Invariants, Faults):
    """One seed: the client, the cloud, the fault plan, the event loop and the checkers."""

    def __init__(
        self, seed: int, days: float, tmp: Path, faults: frozenset[str], planted: str | None
    ) -> None:
        self.seed, self.days = seed, days
        self.rng = random.Random(f"world-{seed}")
        self.fault_rng = random.Random(f"faults-{seed}")
        self.clock = FakeClock()
        self.t0 = self.clock.monotonic()
        self.path = tmp / "buffer.db"
        self.trace: collections.deque[str] = collections.deque(maxlen=TRACE_LEN)
        self.digest = 0
        self.step = 0
        self.violations: dict[str, Violation] = {}
        self.settings = dict(SETTINGS)
        self.settings["capacity_bytes"] = self.rng.choice((64, 128, 256, 1024)) * 1024
        self.settings["overflow_policy"] = self.rng.choice(("evict", "evict", "reject"))
        self.frame_every = self.rng.uniform(60.0, 300.0)  # a camera sampled sparsely
        self.settings["monitor_interval"] = self.rng.choice((30.0, 60.0, 120.0))
        self.cloud = SimCloud(  # before the bound: it uses the cloud's speed
            self.clock, random.Random(f"cloud-{seed}"), request_timeout=SETTINGS["request_timeout"],
            planted=planted, note=self.note,
        )  # fmt: skip
        self.bound = self._liveness_bound()
        plan = [(self.t0 + dt, kind) for dt, kind in draw_plan(self.fault_rng, days, faults)]
        self.planted = planted
        if planted in WORLD_PLANTS:
            plan = sorted([*plan, (self.t0 + days * DAY / 3, "plant")])
        self.plan = collections.deque(plan)
        # The healthy tail: faults end; the camera logs for B more seconds, then the operator
        # runs requeue-failed; after 2 B more every record must be in the cloud.
        self.end_faults = self.t0 + days * DAY
        self.stop_logging = self.end_faults + self.bound
        self.end = self.end_faults + 3 * self.bound
        self.idle_until = 0.0  # the camera sees nothing (a line stopped, a night)
        self.client: EnhancedAsyncLoggingClient | None = None
        self.capacity_cls: type | None = None
        self.zombies: list[Any] = []  # state of dead processes: kept, never closed
        self.checker: sqlite3.Connection | None = None
        self.data_version = -1
        self.logged: dict[str, float] = {}  # record id -> monotonic time log_prediction returned
        self.refused = collections.Counter[str]()
        self.dropped: set[str] = set()
        self.hwm = 0  # highest sequence high-water mark seen in the buffer
        self.overhead: int | None = None
        self.disturbed_at = self.t0
        self.disk_full_until = 0.0
        self.disk_full_on = False
        self.crash_downtime = 5.0
        self.dropped_cursor = 0
        self.restart_at: float | None = None
        self.repair_crash_k: int | None = None
        self.next_frame = self.t0
        self.burst = 0
        self.next_ship = self.next_probe = self.t0
        self.counts: collections.Counter[str] = collections.Counter()
        self.oldest: tuple | None = None  # the oldest unsent row (empty: none), cached
        self.changes = 0  # steps that changed the file
        self.next_liveness_read = 0.0

    # ------------------------------------------------------------------ bookkeeping
    def now(self) -> float:
        return self.clock.monotonic()

    def note(self, event: str) -> None:
        line = f"#{self.step} t={self.now() - self.t0:.1f}s {event}"
        self.trace.append(line)
        self.digest = (self.digest * 1_000_003 + hash_str(line)) % (1 << 61)

    def violate(self, invariant: str, detail: str) -> None:
        if invariant not in self.violations:
            self.note(f"VIOLATION {invariant}: {detail}")
            self.violations[invariant] = Violation(
                invariant, self.step, self.now() - self.t0, detail, list(self.trace)
            )

    def _liveness_bound(self) -> float:
        s = self.settings
        rows = s["capacity_bytes"] // 140  # the fewest bytes a row is counted for
        batches = math.ceil(rows / s["backfill_batch_size"]) + math.ceil(rows / s["batch_size"])
        drain = batches * self.cloud.rtt + rows / self.cloud.records_per_s
        return (
            s["batch_timeout"] + s["monitor_interval"] * (1 + JITTER)
            + max(s["backoff_cap"], RETRY_AFTER_MAX) + s["request_timeout"] + drain + 1.0
        )  # fmt: skip

    def disturb(self, until: float | None = None) -> None:
        self.disturbed_at = max(self.disturbed_at, self.now() if until is None else until)

    # ------------------------------------------------------------------ the process
    def start_client(self) -> None:
        """Start the edge process: construct the client (repairing a damaged file) and
        ``start()`` it with its two thread loops left to the simulation."""
        self.restart_at = None
        self.disturb()
        k, self.repair_crash_k = self.repair_crash_k, None
        try:
            with kill_at_file_op(k, self.note) if k else contextlib.nullcontext():
                client = EnhancedAsyncLoggingClient(
                    "http://sim-cloud.invalid", self.path, DEVICE, transport=self.cloud,
                    clock=self.clock, rng=random.Random(f"client-{self.seed}-{self.step}"),
                    **self.settings,
                )  # fmt: skip
        except SimCrash:
            self.note("edge process killed during start-up (repair)")
            self.counts["killed-in-repair"] += 1
            self._release_lock()
            self.restart_at = self.now() + 5.0
            return
        except Exception as exc:  # the client must always start (defect 9 shows up here)
            self.violate("start", f"the client did not start: {type(exc).__name__}: {exc}")
            self.restart_at = self.now() + 60.0
            return
        if client.repair_report:
            self.note(
                f"start-up repaired the buffer: salvaged {client.repair_report.get('salvaged')}"
            )
        client.shipper.start = lambda: None  # type: ignore[method-assign]  # the sim is the thread
        client.connectivity.start = lambda: None  # type: ignore[method-assign]
        if client.syncer is not None:  # its fsyncs are file ops a kill can land on: in order
            client.syncer.start = lambda: None  # type: ignore[method-assign]
        try:
            client.start()
        except Exception as exc:
            self.violate("start", f"start() raised {type(exc).__name__}: {exc}")
            self.zombies.append(client)
            release_lock(self.path)
            self.restart_at = self.now() + 60.0
            return
        self.client = client
        self.capacity_cls = type(client.capacity)
        if self.now() < self.disk_full_until:
            fill_disk(client.store)
        self.checker = client.store.read_connection()
        self.data_version = -1
        self.dropped_cursor = 0
        self.oldest = None
        self.next_ship = self.next_probe = self.now()
        self.note(f"client started (recovered_in_flight={client.store.recovered_in_flight})")
        self.check_vanished()

    def kill(self, why: str, downtime: float) -> None:
        """The edge process dies: every in-memory state is gone, nothing is closed politely."""
        if self.client is not None:
            self.zombies.append(self.client)  # its connections stay open, as a dead process's
            self.client = None
            self._release_lock()
        if self.checker is not None:
            self.checker.close()
            self.checker = None
        self.counts["kills"] += 1
        self.note(f"edge process killed ({why}); back in {downtime:.0f}s")
        self.restart_at = self.now() + downtime
        self.disturb()

    def _release_lock(self) -> None:
        release_lock(self.path)

    # ------------------------------------------------------------------ the two loops
    def ship(self) -> None:
        client = self.client
        assert client is not None
        shipper = client.shipper
        wake = getattr(shipper, "_wake", None)
        if wake is not None:
            wake.clear()
        sent_before = self.cloud.requests
        step = getattr(shipper, "step", None)  # a seam: one guarded pass of the thread loop
        try:
            if callable(step):
                delay = step()
            else:
                delay = shipper.run_once()
            if client.syncer is not None:  # the syncer's thread, at the same virtual time
                client.syncer.run(self.now())
        except SimCrash:
            self.kill("during a request", self.crash_downtime)
            return
        except Exception as exc:  # ShippingLoop._run's handler, step for step
            self.note(f"shipping pass raised {type(exc).__name__}; in-flight rows reset")
            try:
                client.store.reset_in_flight()
            except Exception as reset_exc:
                self.note(f"reset_in_flight failed: {type(reset_exc).__name__}")
            delay = 1.0
        # A pass takes time. Without this, run_once returning 0.0 for a batch that is not
        # ready (first_new_at + batch_timeout - now rounds to 0.0 while now - first_new_at
        # is still below batch_timeout) would spin forever on a clock that never moves.
        self.clock.advance(PASS_S)
        idle = getattr(sys.modules[type(shipper).__module__], "IDLE_WAKE", 300.0)
        wait = idle if delay is None else min(delay, idle)
        due = client.syncer.due_in(self.now()) if client.syncer is not None else None
        wait = wait if due is None else min(wait, due)
        self.next_ship = self.now() + (max(wait, PASS_S) if wait > 0 else 0.0)
        if self.cloud.requests != sent_before:
            self.counts["requests"] = self.cloud.requests

    def probe(self) -> None:
        assert self.client is not None
        conn = self.client.connectivity
        try:
            conn.check_once()
        except Exception as exc:
            self.note(f"probe raised {type(exc).__name__}")
        self.next_probe = self.now() + conn.next_delay()

    def after_event(self) -> None:
        """Wake the loops whose Events the step set (as their threads would wake)."""
        if self.client is None:
            return
        for loop, attr in (
            (self.client.shipper, "next_ship"),
            (self.client.connectivity, "next_probe"),
        ):
            wake = getattr(loop, "_wake", None)
            if wake is None or wake.is_set():
                if loop is self.client.connectivity and wake is not None:
                    wake.clear()
                setattr(self, attr, self.now())

    # ------------------------------------------------------------------ the camera
    def frame(self) -> None:
        assert self.client is not None
        n = len(self.logged) + sum(self.refused.values())
        boxes = [
            {"cls": self.rng.randrange(8), "conf": round(self.rng.random(), 3),
             "box": [self.rng.randrange(640) for _ in range(4)]}
            for _ in range(self.rng.choice((0, 0, 1, 1, 2, 3, 5)))
        ]  # fmt: skip
        try:
            rid = self.client.log_prediction(
                {"detections": boxes}, image_id=f"frame-{n:08d}", model_version="sim-v1"
            )
        except (DiskFullError, BufferFullError) as exc:
            self.refused[type(exc).__name__] += 1
            self.note(f"log #{n} refused: {type(exc).__name__}")
        except Exception as exc:
            self.violate("log-error", f"log_prediction raised {type(exc).__name__}: {exc}")
        else:
            self.logged[rid] = self.now()
            self.note(f"log #{n}")
        if self.burst:
            self.burst -= 1
            self.next_frame = self.now()
        else:
            if self.rng.random() < 0.01:
                self.burst = self.rng.randint(5, 80)
            self.next_frame = self.now() + self.rng.expovariate(1.0 / self.frame_every)

    # ------------------------------------------------------------------ faults

    def run(self) -> None:
        self.start_client()
        final_requeue = False
        stuck, last = 0, -1.0
        while True:
            self.step += 1
            now = self.now()
            routine = False
            stuck = stuck + 1 if now == last else 0
            last = now
            if stuck > LIVELOCK_STEPS:
                self.violate("liveness", f"{stuck} steps without the virtual clock moving")
                break
            if self.restart_at is not None and self.restart_at <= now:
                self.start_client()
            elif self.disk_full_on and now >= self.disk_full_until:
                self.disk_full_on = False
                if self.client is not None:
                    lift_disk_full(self.client.store)
                self.note("disk space freed")
            elif self.plan and self.plan[0][0] <= now:
                kind = self.plan.popleft()[1]
                try:
                    self.fault(kind)
                except EdgebufError as exc:  # what an application or the CLI would be told
                    self.note(f"{kind}: {type(exc).__name__}: {exc}")
            elif not final_requeue and now >= self.stop_logging:
                final_requeue = True
                self.note("end of the faults: the operator runs requeue-failed")
                self.second_process_requeue()
            elif self.client is not None and self.next_frame <= now and now < self.stop_logging:
                if now < self.idle_until:
                    self.next_frame = self.idle_until
                    self.burst = 0
                else:
                    self.frame()
                routine = True
            elif self.client is not None and self.next_probe <= now:
                self.probe()
                routine = None  # the probe changes nothing in the file
            elif self.client is not None and self.next_ship <= now:
                self.ship()
                routine = self.client is not None
            elif now >= self.end:
                break
            else:
                self.advance(now)
                self.step -= 1
                continue
            self.after_event()
            self.check(forced=routine is False, read=routine is not None)
        self.final_check()

    def advance(self, now: float) -> None:
        times = [self.end]
        if self.restart_at is not None:
            times.append(self.restart_at)
        if self.plan:
            times.append(self.plan[0][0])
        if self.disk_full_on:
            times.append(self.disk_full_until)
        if now < self.stop_logging:
            times.append(self.stop_logging)
        if self.client is not None:
            times += [self.next_probe, self.next_ship]
            if self.next_frame < self.stop_logging:
                times.append(self.next_frame)
        # To the next thing due (a frame left over past stop_logging is not), at least 1 us:
        # a timer a float ulp ahead of ``now`` would not move the clock.
        self.clock.advance(max(1e-6, min(t for t in times if t > now) - now))

    def summary(self) -> dict[str, Any]:
        must = [r for r in self.logged if r not in self.dropped]
        return {
            "logged": len(self.logged),
            "refused": dict(sorted(self.refused.items())),
            "evicted": len(self.dropped),
            "delivered": sum(1 for r in must if self.cloud.stored[(DEVICE, r)] >= 1),
            "cloud_requests": self.cloud.requests,
            "cloud_faults": self.cloud.faults,
            "faults": dict(sorted(self.counts.items())),
            "liveness_bound_s": round(self.bound, 1),
            "capacity_bytes": self.settings["capacity_bytes"],
            "overflow_policy": self.settings["overflow_policy"],
        }
