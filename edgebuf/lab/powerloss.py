"""Power-loss trials on the power-cut filesystem (``edgebuf.lab.powercut``): real processes,
real SQLite files, the process SIGKILLed at the instant of the cut, then the durable state
reopened and counted against what was acknowledged.

- ``edge_trial``: ``python -m edgebuf.lab.producer`` logs onto a buffer on the power-cut mount
  (``log_prediction`` returned = the record id it printed = acknowledged); the cloud is down,
  or up (then a record counts as kept when it is on the edge after the cut or in the cloud).
- ``cloud_trial``: the cloud (``python -m cloud``) with its SQLite database on the mount, an
  edge shipping to it over HTTP from an ordinary disk; the cut kills the cloud; every record
  the edge had marked ``sent`` (the cloud answered 200) must be in the cloud's database.
- ``cleanup_trial``: ``edgebuf cleanup`` (deletes + VACUUM) on the mount, cut mid-run; the file
  must open, pass ``integrity_check`` and hold every row that was durable before.

``power_loss_rows`` runs them as rows of ``edgebuf reliability``, with ``repair_trial``
(``edgebuf.lab.powerrepair``: a cut during ``edgebuf repair``). A new row is one more
``*_trial`` function: make the durable state, start the work as a subprocess on ``fs.path``,
``fs.cut(proc)`` at a random moment, count, and append a row.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebuf.lab.powercut import PowerCutFS
from edgebuf.lab.producer import command as producer_command

CAMERA_FPS = 50.0


@dataclass
class Trial:
    """One power cut: what was acknowledged and what of it survived."""

    acked: int
    lost: int
    rate: float = 0.0  # acknowledged records per second before the cut
    extra: int = 0  # scenario-specific (e.g. rows the edge had marked sent)


@dataclass
class PowerLossRow:
    """Aggregated trials of one scenario (the shape of a reliability row)."""

    scenario: str
    trials: int
    records: int
    lost: int
    bound: int  # lost records allowed in total (0 for the zero-loss scenarios)
    max_lost_per_trial: int
    notes: str = ""
    cuts_over_bound: int = 0  # trials that lost more than their own bound

    @property
    def ok(self) -> bool:
        return self.cuts_over_bound == 0 and self.lost <= self.bound


class _Reader:
    """Collect the 32-hex record ids a producer prints, in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.ids: list[str] = []
        self.first_at: float | None = None
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if len(line) == 33:
                if self.first_at is None:
                    self.first_at = time.monotonic()
                self.ids.append(line[:32])

    def join(self) -> None:
        self._thread.join(10)


def _env(durability: str, sync_interval: float | None) -> dict[str, str]:
    env = dict(os.environ)
    env["EDGEBUF_DURABILITY"] = durability
    env.pop("EDGEBUF_SYNC_INTERVAL", None)
    if sync_interval is not None:
        env["EDGEBUF_SYNC_INTERVAL"] = repr(sync_interval)
    return env


def _edge_rows(db: Path) -> set[str]:
    """Record ids of every row of an edge buffer read back after a cut (integrity checked)."""
    from edgebuf.store import LocalBufferManager
    from edgebuf.store.repair import check_integrity

    if not db.exists():
        return set()
    ok, message = check_integrity(db)
    if not ok and "no such table" in message:
        return set()  # cut before the schema was durable: nothing was acknowledged either
    if not ok:
        raise AssertionError(f"{db} failed integrity_check after the cut: {message}")
    with LocalBufferManager(db, exclusive=False) as store:
        return {r for status in ("pending", "sending", "sent", "failed")
                for r in store.record_ids(status)}  # fmt: skip


def _dead_endpoint() -> str:
    from cloud.testing import free_port

    return f"http://127.0.0.1:{free_port()}"


def edge_trial(
    fs: PowerCutFS,
    *,
    durability: str = "normal",
    sync_interval: float | None = None,
    fps: float = CAMERA_FPS,
    seconds: float = 3.0,
    endpoint: str | None = None,
    device: str = "cam-power",
    name: str = "buffer",
    seed: int = 0,
) -> Trial:
    """One producer on a fresh buffer on ``fs``, cut after ``seconds``. Cloud down unless
    ``endpoint`` is given (then records found in the cloud count as kept too)."""
    db = fs.path / f"{name}-{seed}.db"
    proc = subprocess.Popen(
        producer_command(db, endpoint or _dead_endpoint(), device, count=10**9,
                         start_frame=seed * 10**6, fps=fps, seed=seed),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env=_env(durability, sync_interval),
    )  # fmt: skip
    reader = _Reader(proc)
    deadline = time.monotonic() + 60
    while reader.first_at is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if reader.first_at is None:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the producer did not start (exit {proc.returncode})")
    time.sleep(seconds)
    cut_at = time.monotonic()
    fs.cut(proc)
    reader.join()
    acked = reader.ids
    kept = _edge_rows(db)
    for p in fs.path.glob(f"{db.name}*"):  # the filesystem lives in memory
        p.unlink()
    if endpoint is not None:
        from edgebuf.lab.verify import audit

        kept |= set(acked) - set(audit(endpoint, device, acked).lost)
    lost = len(set(acked) - kept)
    return Trial(len(acked), lost, len(acked) / max(1e-9, cut_at - reader.first_at))


# ---------------------------------------------------------------------- cloud
@contextmanager
def _cloud_on(fs: PowerCutFS, env: dict[str, str] | None = None) -> Iterator[Any]:
    from cloud.testing import CloudServer

    server = CloudServer(f"sqlite:///{fs.path}/cloud.db", env=env or {})
    server.start()
    try:
        yield server
    finally:
        server.close()


def _cloud_ids(db: Path) -> set[str]:
    from cloud.testing import stored_record_ids

    return stored_record_ids(db)


def cloud_trial(
    fs: PowerCutFS,
    work: Path,
    *,
    seconds: float = 3.0,
    env: dict[str, str] | None = None,
    seed: int = 0,
) -> Trial:
    """The cloud's SQLite on ``fs``; an in-process edge (buffer in ``work``) ships flat out
    through the real HTTP path; cut the cloud after ``seconds``. ``acked`` = rows the edge
    had marked ``sent``; ``lost`` = of those, the ones missing from the cloud after the cut."""
    from edgebuf.client import EnhancedAsyncLoggingClient
    from edgebuf.lab.producer import fake_prediction

    rng = random.Random(seed)
    device = f"cloud-cut-{seed}"
    db = work / f"{device}.db"
    with _cloud_on(fs, env) as server:
        client = EnhancedAsyncLoggingClient(
            server.url, db, device, batch_size=64, batch_timeout=0.05, max_retries=1,
            backoff_base=0.05, backoff_cap=0.2, request_timeout=5.0, health_timeout=1.0,
            monitor_interval=0.5,
        )  # fmt: skip
        client.start()
        stop = threading.Event()

        def produce() -> None:
            frame = 0
            while not stop.is_set():
                client.log_predictions(
                    [{"prediction": fake_prediction(rng, frame + i)} for i in range(16)]
                )
                frame += 16
                time.sleep(0.005)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        time.sleep(seconds)
        assert server.process is not None
        fs.cut(server.process)
        stop.set()
        producer.join(10)
        client.close(timeout=1.0)
    from edgebuf.store import LocalBufferManager

    with LocalBufferManager(db, exclusive=False) as edge:
        sent = set(edge.record_ids("sent"))
        total = sum(edge.counts().values())
    stored = _cloud_ids(fs.path / "cloud.db")
    (fs.path / "cloud.db").unlink(missing_ok=True)  # the next trial starts empty
    for suffix in ("-wal", "-shm"):
        (fs.path / f"cloud.db{suffix}").unlink(missing_ok=True)
    return Trial(len(sent), len(sent - stored), extra=total)


# ---------------------------------------------------------------------- cleanup / VACUUM
def _seed_buffer(db: Path, rows: int, seed: int) -> set[str]:
    """A durable buffer: ``rows`` records, the older half sent 30 days ago, synced to disk."""
    from edgebuf.lab.producer import fake_prediction
    from edgebuf.records import prepare_record
    from edgebuf.store import LocalBufferManager

    rng = random.Random(seed)
    now = time.time()
    from edgebuf.clock import FakeClock

    month_ago = FakeClock(start_wall=now - 30 * 86_400)  # the older half was sent a month ago
    with LocalBufferManager(db, durability="full", clock=month_ago) as store:
        recs = [
            prepare_record(fake_prediction(rng, i), now=now, max_bytes=1 << 20) for i in range(rows)
        ]
        store.add_predictions("cam-cleanup", recs)
        old = store.claim(rows // 2)
        assert old is not None
        store.mark_sent(old.ids, claim_id=old.claim_id)
        store.checkpoint("TRUNCATE")
        return set(store.record_ids("pending"))


_CLEANUP = """
import sys
from edgebuf.space.capacity import CapacityManager
from edgebuf.store import LocalBufferManager
store = LocalBufferManager(sys.argv[1], exclusive=False)
print("start", flush=True)
# cleanup deletes the month-old sent rows in chunks, then hands the pages back
# (incremental vacuum) and truncates the WAL: what edgebuf's daily cleanup does.
CapacityManager(store, capacity_bytes=1 << 30, cleanup_after_days=7).cleanup()
store.checkpoint("TRUNCATE")
store.close()
print("done", flush=True)
"""


def cleanup_duration(fs: PowerCutFS, rows: int = 4000) -> float:
    """Seconds one uncut cleanup + VACUUM run takes here (to aim the cuts inside it)."""
    db = fs.path / "cleanup-calibrate.db"
    _seed_buffer(db, rows, 0)
    proc = subprocess.Popen([sys.executable, "-c", _CLEANUP, str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    started = time.monotonic()
    proc.stdout.readline()
    took = time.monotonic() - started
    proc.wait(30)
    for p in fs.path.glob("cleanup-calibrate.db*"):
        p.unlink()
    return took


def cleanup_trial(fs: PowerCutFS, *, rows: int = 4000, seed: int = 0, within: float = 1.0,
                  rng: random.Random | None = None) -> Trial:  # fmt: skip
    """Cut at a random moment of the first ``within`` seconds of cleanup's deletes and the
    VACUUM that follows (see ``cleanup_duration``); ``lost`` counts unsent rows (durable
    before the run) missing after it; a failed integrity check raises. ``extra``: 1 when
    the run had finished before the cut."""
    rng = rng or random.Random(seed)
    db = fs.path / f"cleanup-{seed}.db"
    keep = _seed_buffer(db, rows, seed)
    proc = subprocess.Popen([sys.executable, "-c", _CLEANUP, str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(rng.uniform(0.0, within))
    finished = proc.poll() is not None
    fs.cut(proc)
    after = _edge_rows(db)
    for p in fs.path.glob(f"cleanup-{seed}.db*"):
        p.unlink()
    return Trial(len(keep), len(keep - after), extra=int(finished))
