"""``edgebuf simulate``: days to weeks of one edge client on a virtual clock, faults from a seed.

The real parts run: ``EnhancedAsyncLoggingClient`` on a real SQLite file (in RAM, /dev/shm),
its ``ShippingLoop``, ``Sender``, ``BufferRecoveryManager``, ``ConnectivityMonitor`` and
``CapacityManager``, against ``SimCloud`` (``edgebuf.lab.simcloud``), all on one
``FakeClock``. No thread runs: the simulation is the shipping and the connectivity thread
(it calls ``run_once`` / ``check_once`` with the handlers of their thread loops, and wakes
them when their Events are set), so a seed replays the same events exactly. The clock
jumps from event to event: a camera logging at a sampled rate, probes, shipping passes and
the fault plan drawn from the seed.

Faults: cloud outages (seconds to days), flaky windows (network errors, timeouts, 5xx, 429
with Retry-After, 413, dropped acknowledgements, exceptions of any type from the
transport), poison windows (422 for some records: dead letters), disk full (a real
SQLITE_FULL: ``PRAGMA max_page_count`` on the store's connection), process kills (between
steps, and during a request before/after the cloud commits: every in-memory state is
dropped, the file reopened; the dead process's connections are left unclosed and its lock
descriptor closed, as the kernel does), kills inside cleanup and inside the repair that
start-up runs on a damaged file (at the k-th file operation), graceful restarts, wall
clock jumps, ``requeue-failed`` and ``cleanup`` from a second process
(``LocalBufferManager(path, exclusive=False)``, as the CLI does), ``flush()`` calls.

Invariants, checked after every step. The cheap ones (cloud side, liveness) run after each
one; the SQL recount of the rows runs after every fault, crash and restart step, and after
every ``RECOUNT_EVERY``-th step that changed the file (``PRAGMA data_version``): counters
are cumulative, so a drift is still seen, a few steps later, with the trace around it.

* ``delivered-once``: the cloud never stores a record twice;
* ``no-loss``: every record whose ``log_prediction`` returned is, at every check, in the
  buffer, in the cloud or in ``dropped_records`` (evicted by the overflow policy, counted
  there by reason, excluded from "must arrive"); at the end, after a healthy period, every
  one not evicted is stored by the cloud exactly once;
* ``liveness``: no record stays ``pending`` or ``sending`` longer than ``B`` once the cloud
  is healthy (no fault window open, no fault answered, no restart, requeue or disk full for
  ``B``), where, with the client's settings,
  ``B = batch_timeout``            (the live lane waits at most this for a batch)
  ``+ monitor_interval * 1.1``     (a client that marked the cloud down probes again)
  ``+ max(backoff_cap, Retry-After max)`` (a backoff deadline set by the last fault)
  ``+ request_timeout``            (one request in flight when the fault ended)
  ``+ drain``                      (the largest backlog the capacity holds,
  ``capacity_bytes / 140`` rows, in ``backfill_batch_size`` and ``batch_size`` batches at the
  cloud's simulated round trip and rate) ``+ 1 s`` (timer slack). A kill, a restart, the
  end of a disk full or a requeue restarts the clock of ``B``, like a fault;
* ``counters``: ``store.metadata()`` equals a recount of the rows (total_buffered = the
  calls that returned; rows = buffered - cleaned - evicted; sent rows = sent - cleaned;
  failed rows = failed - requeued; ``dropped_records`` = evicted; live_bytes = JSON bytes
  + a fixed overhead per row; rejected_full = the calls refused);
* ``flush-returns`` / ``close-returns``: ``flush(timeout)`` and ``close(timeout)`` return
  by themselves on the virtual clock (a real-time watchdog: if the virtual clock does not
  move for ``WATCHDOG_S`` real seconds while the call has not returned, it is stuck
  sleeping in real time; the watchdog then moves the clock past the timeout to free it);
* ``capacity``: live bytes <= ``capacity_bytes``; the file <= 2 x capacity + 256 KiB;
* ``seq-monotonic``: a device's sequence high-water mark never goes backwards and is never
  below the highest sequence the cloud has seen; the cloud never sees one number twice;
* ``start`` / ``log-error``: the client starts after every crash; ``log_prediction`` raises
  nothing but ``DiskFullError`` / ``BufferFullError``.

Not covered (seams missing, see the notes of issue 12): two requests in flight
(``drain_concurrency`` is 1: the drain's pool thread would make the order of requests
depend on the scheduler; an injectable executor would let it run here), a disk full that
also stops the WAL from growing (``max_page_count`` limits database pages only), power
loss. The simulation reads two private attributes, the shipping and connectivity loops'
``_wake`` Events, to wake them as their threads would, and copies the exception handler
of ``ShippingLoop._run``; a ``ShippingLoop.step()`` (one guarded pass, returning the
delay) is used instead of that copy as soon as it exists.

Each invariant is reported once per seed (seed, step, virtual time, detail and the last
events); the run goes on, so one seed can show several. ``edgebuf simulate --seed N``
replays a seed exactly (the summary and the event trace are identical).
"""

from __future__ import annotations

import collections
import contextlib
import math
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebuf import (
    BufferFullError,
    DiskFullError,
    EdgebufError,
    EnhancedAsyncLoggingClient,
    FakeClock,
    LocalBufferManager,
)
from edgebuf.lab.simcloud import (
    ALL_FAULTS,
    RETRY_AFTER_MAX,
    SimCloud,
    SimCrash,
    damage,
    draw_plan,
    fill_disk,
    hash_str,
    kill_at_call,
    kill_at_file_op,
    lift_disk_full,
    log_uniform,
    quiet_logs,
    release_lock,
    scratch_dir,
)

DAY, HOUR = 86_400.0, 3_600.0
DEVICE = "sim-cam"
WATCHDOG_S = 0.2
PASS_S = 1e-6  # virtual seconds one shipping pass takes
LIVELOCK_STEPS = 20_000  # steps at one virtual instant: a busy loop
RECOUNT_EVERY = 8  # full recount on every 8th step that changed the file, and on each fault
TRACE_LEN = 30
JITTER = 0.1  # the connectivity monitor's probe jitter (its default)
SETTINGS: dict[str, Any] = {
    "batch_size": 32, "batch_timeout": 10.0, "monitor_interval": 30.0, "health_timeout": 5.0,
    "request_timeout": 30.0, "max_retries": 5, "backoff_base": 2.0, "backoff_cap": 60.0,
    "backfill_batch_size": 512, "cleanup_after_days": 1.0, "reserve_bytes": 0,
    "drain_concurrency": 1,  # a second request in flight runs on a pool thread: not replayable
}  # fmt: skip
WORLD_PLANTS = ("counter", "seq", "capacity")  # planted defects (tests of the checkers)


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


class World:
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
            self.note(f"start-up repaired the buffer: salvaged {client.repair_report.get('salvaged')}")
        client.shipper.start = lambda: None  # type: ignore[method-assign]  # the sim is the thread
        client.connectivity.start = lambda: None  # type: ignore[method-assign]
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
        for loop, attr in ((self.client.shipper, "next_ship"), (self.client.connectivity, "next_probe")):
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
    def fault(self, kind: str) -> None:
        r, now = self.fault_rng, self.now()
        self.counts[kind] += 1
        if kind == "outage":
            length = min(log_uniform(r, 5.0, 2 * DAY), self.end_faults - now)
            self.cloud.outage_until = max(self.cloud.outage_until, now + length)
            self.disturb(self.cloud.outage_until)
            self.note(f"cloud outage for {length:.0f}s")
        elif kind == "flaky":
            length = min(log_uniform(r, 60.0, 6 * HOUR), self.end_faults - now)
            self.cloud.flaky_until = max(self.cloud.flaky_until, now + length)
            self.cloud.flaky_p = r.uniform(0.2, 0.9)
            self.disturb(self.cloud.flaky_until)
            self.note(f"cloud flaky for {length:.0f}s (p={self.cloud.flaky_p:.2f})")
        elif kind == "poison":
            length = min(log_uniform(r, 600.0, 2 * HOUR), self.end_faults - now)
            self.cloud.poison_until = max(self.cloud.poison_until, now + length)
            self.cloud.poison_mod = r.choice((3, 5, 7))
            self.note(f"cloud refuses every seq % {self.cloud.poison_mod} == 0 for {length:.0f}s")
        elif kind == "disk-full":
            length = min(log_uniform(r, 60.0, 3 * HOUR), self.end_faults - now)
            self.disk_full_until = max(self.disk_full_until, now + length)
            self.disk_full_on = True
            self.disturb(self.disk_full_until)
            if self.client is not None:
                fill_disk(self.client.store)
            self.note(f"disk full for {length:.0f}s")
        elif kind == "crash" and self.client is not None:
            self.kill("SIGKILL between steps", log_uniform(r, 1.0, HOUR))
        elif kind == "crash-send":
            self.cloud.crash_next = r.choice(("before", "after"))
            self.crash_downtime = log_uniform(r, 1.0, 600.0)
        elif kind == "crash-cleanup" and self.client is not None:
            k = r.randint(1, 6)
            store = self.client.store
            try:
                with kill_at_call(store, ("delete_rows", "incremental_vacuum", "execute_write",
                                           "checkpoint", "size_info"), k):  # fmt: skip
                    report = self.client.cleanup(older_than_days=r.uniform(0.0, 2.0))
                self.note(f"cleanup ran ({report})")
            except SimCrash:
                self.kill(f"during cleanup, at store call {k}", log_uniform(r, 1.0, 600.0))
        elif kind == "crash-repair":
            if self.client is not None:
                self.kill("before damage to the file", 0.0)
            damage(self.path)
            self.repair_crash_k = r.randint(1, 8)
            self.restart_at = now + log_uniform(r, 1.0, 600.0)
            self.note(f"file damaged (index page); start-up repair killed at file op {self.repair_crash_k}")
        elif kind == "restart" and self.client is not None:
            client = self.client
            self._bounded("close-returns", lambda: client.close(timeout=10.0), 10.0)
            self.client = None
            if self.checker is not None:
                self.checker.close()
                self.checker = None
            self.restart_at = now + log_uniform(r, 1.0, 300.0)
            self.disturb()
            self.note("graceful restart")
        elif kind == "plant":
            self.plant()
        elif kind == "idle":
            length = log_uniform(r, 600.0, 12 * HOUR)
            self.idle_until = max(self.idle_until, now + length)
            self.note(f"camera idle for {length:.0f}s")
        elif kind == "clock-jump":
            jump = r.choice((-1, 1)) * log_uniform(r, 60.0, 10 * DAY)
            self.clock.jump_wall(jump)
            self.note(f"wall clock jumped {jump:+.0f}s")
        elif kind == "requeue":
            self.second_process_requeue()
        elif kind == "cleanup2":
            self.second_process_cleanup(r.uniform(0.0, 3.0), r.randint(1, 8) if r.random() < 0.3 else None)
        elif kind == "flush" and self.client is not None:
            client, timeout = self.client, r.choice((1.0, 5.0, 30.0))
            done = self._bounded("flush-returns", lambda: client.flush(timeout=timeout), timeout)
            if done is True and client.store.has_unsent():
                self.violate("flush-returns", "flush() returned True with records unsent")

    def plant(self) -> None:
        """A planted defect, for the tests of the checkers (never in a real run)."""
        if self.planted == "seq":  # the sequence marks lost, the process restarted
            if self.client is not None:
                self.kill("planted", 1.0)
        with LocalBufferManager(self.path, exclusive=False, clock=self.clock) as other:
            if self.planted == "counter":
                other.execute_write(
                    "UPDATE buffer_metadata SET value = value + 1 WHERE key = 'total_sent'"
                )
            elif self.planted == "seq":
                other.execute_write("UPDATE buffer_metadata SET value = 0 WHERE key LIKE 'seq:%'")
            elif self.planted == "capacity":
                other.execute_write("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
                other.execute_write(
                    "INSERT INTO ballast VALUES (zeroblob(?))", (4 * self.settings["capacity_bytes"],)
                )
        self.note(f"PLANTED: {self.planted}")

    def second_process_requeue(self) -> None:
        try:
            with LocalBufferManager(self.path, exclusive=False, clock=self.clock) as other:
                if self.now() < self.disk_full_until:
                    fill_disk(other)
                n = other.requeue_failed()
        except EdgebufError as exc:  # the CLI prints it and exits 1: no change was made
            self.note(f"second process: requeue-failed refused: {type(exc).__name__}")
            return
        self.note(f"second process: requeue-failed put back {n}")
        if n:
            self.disturb()

    def second_process_cleanup(self, days: float, crash_k: int | None) -> None:
        try:
            other = LocalBufferManager(self.path, exclusive=False, clock=self.clock)
        except EdgebufError as exc:
            self.note(f"second process: cleanup refused: {type(exc).__name__}")
            return
        try:
            if self.capacity_cls is None:
                return
            manager = self.capacity_cls(other, capacity_bytes=self.settings["capacity_bytes"])
            calls = ("delete_rows", "incremental_vacuum", "execute_write", "checkpoint")
            with kill_at_call(other, calls, crash_k) if crash_k else contextlib.nullcontext():
                report = manager.cleanup(days)
            self.note(f"second process: cleanup --older-than-days {days:.2f}: {report}")
            if self.checker is not None:
                self.check_vanished()
        except SimCrash:
            self.zombies.append(other)
            self.note(f"second process killed during cleanup (store call {crash_k})")
            return
        except EdgebufError as exc:  # e.g. a damaged file while the client is down
            self.note(f"second process: cleanup failed: {type(exc).__name__}")
        other.close()

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
            if forced or self.changes % RECOUNT_EVERY == 0:
                self.recount()
        elif forced:
            self.recount()
        self.check_liveness()

    def recount(self) -> None:
        assert self.client is not None and self.checker is not None
        store, c = self.client.store, self.checker
        meta = store.metadata()
        rows = dict(c.execute("SELECT status, count(*) FROM prediction_buffer GROUP BY status"))
        n, chars, top = c.execute(
            "SELECT count(*), coalesce(sum(length(prediction_data)), 0), coalesce(max(seq), 0)"
            " FROM prediction_buffer"
        ).fetchone()
        for (rid,) in c.execute(
            "SELECT record_id FROM dropped_records WHERE id > ?", (self.dropped_cursor,)
        ):
            self.dropped.add(rid)
        self.dropped_cursor = c.execute("SELECT coalesce(max(id), 0) FROM dropped_records").fetchone()[0]
        reasons = dict(c.execute("SELECT reason, count(*) FROM dropped_records GROUP BY reason"))
        n_dropped = reasons.pop("capacity", 0)
        if reasons:
            self.violate("counters", f"dropped_records with reasons no counter accounts for: {reasons}")
        g = lambda key: int(meta.get(key, 0))  # noqa: E731
        if n and self.overhead is None:
            self.overhead = (g("live_bytes") - chars) // n
        checks = [
            ("total_buffered", g("total_buffered"), len(self.logged)),  # calls that returned
            ("rows", n, g("total_buffered") - g("total_cleaned") - g("evicted_capacity")),
            ("sent rows", rows.get("sent", 0), g("total_sent") - g("total_cleaned")),
            ("failed rows", rows.get("failed", 0), g("total_failed") - g("total_requeued")),
            ("dropped_records (capacity)", n_dropped, g("evicted_capacity")),
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
            self.violate("capacity", f"live bytes {g('live_bytes')}, file {size} bytes, capacity {cap}")

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
            self.oldest = self.checker.execute(
                "SELECT record_id, status FROM prediction_buffer"
                " WHERE status IN ('pending', 'sending') ORDER BY id LIMIT 1"
            ).fetchone() or ()
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
        held |= {rid for (rid,) in self.checker.execute("SELECT record_id FROM dropped_records")}
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


def run_seed(
    seed: int,
    days: float = 1.0,
    *,
    faults: Iterable[str] = ALL_FAULTS,
    planted: str | None = None,
) -> SeedResult:
    """Simulate ``days`` of one client with the faults drawn from ``seed``."""
    started, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix=f"edgebuf-sim-{seed}-", dir=scratch_dir()) as tmp:
        world = World(seed, days, Path(tmp), frozenset(faults), planted)
        try:
            with quiet_logs():
                world.run()
        finally:
            if world.checker is not None:
                world.checker.close()
            world.zombies.clear()
            world.client = None
    return SeedResult(
        seed=seed, days=days, steps=world.step, summary=world.summary(),
        violations=sorted(world.violations.values(), key=lambda v: v.step),
        trace_digest=f"{world.digest:016x}", wall_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu,
    )  # fmt: skip



def run_seeds(
    seeds: Iterable[int],
    days: float = 1.0,
    *,
    faults: Iterable[str] = ALL_FAULTS,
    progress: Callable[[SeedResult], None] | None = None,
) -> list[SeedResult]:
    """Run every seed; ``progress`` is called with each result as it ends."""
    results = []
    for seed in seeds:
        result = run_seed(seed, days, faults=faults)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def _echo(message: str, err: bool = False) -> None:
    print(message, file=sys.stderr if err else sys.stdout)


def format_violation(result: SeedResult, v: Violation) -> str:
    lines = [
        f"seed {result.seed}: step {v.step} (t={v.t:.1f} s): {v.invariant} violated: {v.detail}",
        f"  replay: edgebuf simulate --seed {result.seed} --days {result.days:g}",
        "  last events:",
    ]
    return "\n".join(lines + [f"    {line}" for line in v.trace])


def report(results: list[SeedResult], days: float, wall_s: float) -> dict[str, Any]:
    """What a run found: the first seed to break each invariant, and totals."""
    first: dict[str, dict[str, Any]] = {}
    for r in results:
        for v in r.violations:
            first.setdefault(v.invariant, {"seed": r.seed, "step": v.step, "detail": v.detail})
    return {
        "seeds": len(results),
        "days": days,
        "ok": all(r.ok for r in results),
        "failed_seeds": [r.seed for r in results if not r.ok],
        "first_violation_by_invariant": dict(sorted(first.items())),
        "records_logged": sum(r.summary["logged"] for r in results),
        "steps": sum(r.steps for r in results),
        "wall_s": round(wall_s, 2),
        "cpu_s": round(sum(r.cpu_s for r in results), 2),
    }


def cli_main(
    *, seed: int | None, seeds: int | None, days: float, as_json: bool,
    echo: Callable[..., None] | None = None,
) -> int:  # fmt: skip
    """``edgebuf simulate``: exit status 1 on any violation."""
    import json

    echo = echo or _echo
    started = time.perf_counter()
    if seed is not None:
        result = run_seed(seed, days)
        if as_json:
            echo(json.dumps(result.as_dict(), indent=2))
        else:
            for v in result.violations:
                echo(format_violation(result, v))
            echo(f"seed {seed}: {'ok' if result.ok else 'FAILED'}, {result.steps} steps, "
                 f"trace {result.trace_digest}, {json.dumps(result.summary)}")  # fmt: skip
        return 0 if result.ok else 1

    def progress(r: SeedResult) -> None:
        if not as_json:
            for v in r.violations[:1]:
                echo(format_violation(r, v), err=True)

    results = run_seeds(range(seeds or 200), days, progress=progress)
    summary = report(results, days, time.perf_counter() - started)
    if as_json:
        summary["results"] = [r.as_dict() for r in results]
        echo(json.dumps(summary, indent=2))
    else:
        echo(f"{summary['seeds']} seeds x {days:g} days, {summary['steps']} steps, "
             f"{summary['records_logged']} records, {summary['wall_s']} s: "
             f"{'ok' if summary['ok'] else str(len(summary['failed_seeds'])) + ' seeds FAILED'}")
        for name, where in summary["first_violation_by_invariant"].items():
            echo(f"  {name}: first at seed {where['seed']} step {where['step']}: {where['detail']}")
    return 0 if summary["ok"] else 1
