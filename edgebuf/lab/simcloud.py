"""The world around the client in ``edgebuf simulate``: the cloud, the disk, the process.

``SimCloud`` is a Transport on a FakeClock with seeded faults; below it are the fault plan
(what happens when, drawn from the seed) and the injectors of disk and process faults: a
real SQLITE_FULL, a damaged page, a kill at the k-th call or file operation, the lock of a
dead process released.

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
import contextlib
import json
import logging
import math
import os
import random
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from edgebuf import FakeClock, LocalBufferManager, SendResult

DAY, HOUR = 86_400.0, 3_600.0

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


# Fault kinds and their mean number per simulated day.
FAULT_RATES: dict[str, float] = {
    "outage": 2.0, "flaky": 3.0, "poison": 0.5, "disk-full": 0.5, "crash": 0.7,
    "crash-send": 0.5, "crash-cleanup": 0.3, "crash-repair": 0.4, "restart": 0.4,
    "clock-jump": 0.7, "requeue": 1.0, "cleanup2": 0.7, "flush": 0.7, "idle": 1.0,
}  # fmt: skip
ALL_FAULTS = frozenset(FAULT_RATES)


def draw_plan(rng: random.Random, days: float, faults: frozenset[str]) -> list[tuple[float, str]]:
    """(time offset, kind) of every fault, drawn from the seed (Poisson per kind)."""
    plan = []
    for kind, rate in FAULT_RATES.items():
        n = poisson(rng, rate * days)
        plan += [(rng.uniform(0.0, days * DAY), kind) for _ in range(n) if kind in faults]
    return sorted(plan)


def poisson(rng: random.Random, mean: float) -> int:
    n, t = 0, rng.expovariate(1.0)
    while t < mean:
        n, t = n + 1, t + rng.expovariate(1.0)
    return n


def log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


_FILE_OPS = ("replace", "rename", "remove", "unlink", "fsync")  # os functions a kill can hit


def hash_str(text: str) -> int:
    """A stable hash (Python's own is salted per process)."""
    h = 0
    for ch in text.encode():
        h = (h * 131 + ch) % (1 << 61)
    return h


def fill_disk(store: LocalBufferManager) -> None:
    """A real SQLITE_FULL: no page beyond the current ones (reopening lifts it)."""
    with contextlib.suppress(Exception):
        store.limit_pages(None)


def lift_disk_full(store: LocalBufferManager) -> None:
    with contextlib.suppress(Exception):
        store.limit_pages(1073741823)


def damage(path: Path) -> None:
    """Overwrite the root page of the status index: ``quick_check`` fails, rows survive."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='idx_status'").fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    if root is None:
        return
    with open(path, "r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(b"\xa5" * 64)


@contextlib.contextmanager
def kill_at_call(obj: Any, names: Iterable[str], k: int | None) -> Iterator[None]:
    """Kill the process at the ``k``-th call of any of ``obj``'s methods ``names``."""
    calls = [0]
    originals = {name: getattr(obj, name) for name in names}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == k:
                raise SimCrash(f"killed at call {k} ({fn.__name__})")
            return fn(*args, **kwargs)

        return wrapper

    for name, fn in originals.items():
        setattr(obj, name, wrap(fn))
    try:
        yield
    finally:
        for name in originals:
            with contextlib.suppress(AttributeError):
                delattr(obj, name)


@contextlib.contextmanager
def kill_at_file_op(k: int, note: Callable[[str], None]) -> Iterator[None]:
    """Kill the process at the ``k``-th file operation (rename, remove, copy, fsync)."""
    calls = [0]
    originals = {name: getattr(os, name) for name in _FILE_OPS}
    copy = shutil.copyfile

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == k:
                note(f"kill at file op {k}: {name}")
                raise SimCrash(f"killed at file op {k} ({name})")
            return fn(*args, **kwargs)

        return wrapper

    for name, fn in originals.items():
        setattr(os, name, wrap(name, fn))
    shutil.copyfile = wrap("copyfile", copy)  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(os, name, fn)
        shutil.copyfile = copy  # type: ignore[assignment]


def scratch_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def quiet_logs() -> contextlib.AbstractContextManager[None]:
    """edgebuf logs every fault as it should; a simulation of thousands is silent."""

    @contextlib.contextmanager
    def quiet() -> Iterator[None]:
        logger = logging.getLogger("edgebuf")
        level = logger.level
        logger.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            logger.setLevel(level)

    return quiet()


def release_lock(db_path: Path) -> None:
    """Close this process's descriptors of ``<db>.lock``, as the kernel does for a process
    that died (the dead client's objects are kept, unclosed, so nothing closes them twice)."""
    from edgebuf.store.connection import abandon_process_lock

    abandon_process_lock(db_path)
