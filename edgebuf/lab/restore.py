"""The restore drill: the cloud's database is replaced by an older copy mid-run (a restore
from backup) and reconciliation makes every record arrive exactly once again.

A real cloud process on SQLite, camera processes logging through the buffered client with
reconciliation every ``reconcile_interval`` s. At ``backup_at`` the cloud is stopped, its
file copied (a backup) and the cloud started again; at ``restore_at`` it is killed, the copy
put back in place of its file and restarted: every record delivered between the two moments
is gone from the cloud although the edges hold it as delivered. The edges keep logging; each
reconciliation sees the hole in the cloud's account, sends the lost records again, and the
drill ends with the cloud's gap count back at zero and every record stored exactly once.
``edgebuf drill --restore-cloud-backup`` runs it; ``notebooks/07_restore_drill`` plots it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgebuf.lab.processes import kill_process
from edgebuf.lab.producer import command as producer_command
from edgebuf.lab.verify import audit, fetch_gaps

__all__ = ["RestoreConfig", "RestoreResult", "format_restore", "run_restore_drill"]


@dataclass
class RestoreConfig:
    duration: float = 16.0  # seconds of camera activity
    fps: float = 40.0
    backup_at: float = 3.0
    restore_at: float = 8.0
    devices: int = 1
    reconcile_interval: float = 1.0
    out_dir: Path = Path("drill-out")
    seed: int = 0
    drain_timeout: float = 120.0


@dataclass
class RestoreResult:
    logged: int
    stored: int
    lost: int
    duplicated: int
    lost_by_restore: int  # records the cloud held before the restore and not after it
    max_missing: int  # records logged that the cloud did not hold, at worst (after the restore)
    final_missing: int  # seqs missing in the cloud at the end
    gap_samples: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.final_missing == 0


def _copy_db(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
        else:
            Path(f"{dst}{suffix}").unlink(missing_ok=True)


def _held(db: Path, devices: list[str]) -> dict[str, int]:
    """Records each device has in the cloud database file ``db`` (the service stopped)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT device_id, count(*) FROM predictions GROUP BY device_id")
            ).all()
    finally:
        engine.dispose()
    counts = {str(d): int(n) for d, n in rows}
    return {d: counts.get(d, 0) for d in devices}


def run_restore_drill(cfg: RestoreConfig) -> RestoreResult:
    """Run the drill end to end; plots and a summary go to ``cfg.out_dir``."""
    from cloud.testing import CloudServer
    from edgebuf.lab import plots

    work = Path(tempfile.mkdtemp(prefix="edgebuf-restore-"))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db = work / "cloud.db"
    server = CloudServer(f"sqlite:///{db}")
    server.start()
    events: list[dict] = []
    samples: list[dict] = []
    devices = [f"restore-cam{i + 1}" for i in range(cfg.devices)]
    ids: dict[str, list[str]] = {d: [] for d in devices}
    procs: list[subprocess.Popen[str]] = []
    stop = threading.Event()
    t0 = time.time()

    def read(proc: subprocess.Popen[str], device: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(line.strip()) == 32:
                ids[device].append(line.strip())

    def sample() -> None:
        while not stop.is_set():
            for device in devices:
                logged = len(ids[device])
                try:
                    gaps = fetch_gaps(server.url, device, timeout=2.0)
                except Exception:  # the cloud is down for the backup or the restore
                    continue
                samples.append({"t": time.time(), "device": device, "gaps": gaps["missing"],
                                "missing": max(0, logged - gaps["count"])})  # fmt: skip
            stop.wait(0.2)

    try:
        for i, device in enumerate(devices):
            proc = subprocess.Popen(
                producer_command(work / f"{device}.db", server.url, device,
                                 count=int(cfg.duration * cfg.fps), fps=cfg.fps, seed=cfg.seed + i,
                                 flush=cfg.drain_timeout, reconcile_interval=cfg.reconcile_interval),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            procs.append(proc)
            threading.Thread(target=read, args=(proc, device), daemon=True).start()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        backup = work / "cloud-backup.db"

        def stored() -> dict[str, int]:
            return {d: audit(server.url, d, ids[d]).stored for d in devices}

        # On the clock, but never before the cameras have delivered something, nor the
        # restore before more has arrived since the backup (a slow start on a loaded box
        # would otherwise back up and restore the same, empty, cloud).
        limit = time.time() + cfg.duration + 60
        time.sleep(max(0.0, cfg.backup_at - (time.time() - t0)))
        while not all(stored().values()) and time.time() < limit:
            time.sleep(0.2)
        server.stop()  # a clean stop: the file is consistent for the copy
        _copy_db(db, backup)
        server.start()
        at_backup = stored()
        events.append({"t": time.time(), "kind": "cloud_backup"})
        time.sleep(max(0.0, cfg.restore_at - (time.time() - t0)))
        before = stored()
        while sum(before.values()) <= sum(at_backup.values()) and time.time() < limit:
            time.sleep(0.2)
            before = stored()
        server.kill()
        _copy_db(backup, db)
        Path(f"{db}-shm").unlink(missing_ok=True)
        # What the restored cloud holds, read from the file before it serves again: once it
        # does, reconciliation heals the hole within a second (on a loaded box, before an
        # audit over HTTP could see it).
        after = _held(db, devices)
        server.start()
        events.append({"t": time.time(), "kind": "cloud_restored"})
        for proc in procs:
            proc.wait(timeout=cfg.duration + cfg.drain_timeout + 60)
        # The cameras are done and flushed; one last reconciliation confirms the tail.
        for device in devices:
            _final_reconcile(work / f"{device}.db", server.url)
        time.sleep(0.5)
        stop.set()
        sampler.join(5)
        audits = {d: audit(server.url, d, ids[d]) for d in devices}
        final_missing = sum(fetch_gaps(server.url, d)["missing"] for d in devices)
        result = RestoreResult(
            logged=sum(a.logged for a in audits.values()),
            stored=sum(a.stored for a in audits.values()),
            lost=sum(len(a.lost) for a in audits.values()),
            duplicated=sum(n - 1 for a in audits.values() for n in a.duplicated.values()),
            lost_by_restore=sum(before[d] - after[d] for d in devices),
            max_missing=max(
                (s["missing"] for s in samples if s["t"] >= events[-1]["t"]), default=0
            ),  # fmt: skip
            final_missing=final_missing,
            gap_samples=[{**s, "t": round(s["t"] - t0, 3)} for s in samples],
            events=[{**e, "t": round(e["t"] - t0, 3)} for e in events],
        )
        result.files.append(str(plots.plot_gaps(samples, events, out / "restore_gaps.png", t0=t0)))
        return result
    finally:
        stop.set()
        for proc in procs:
            kill_process(proc)
        server.close()
        shutil.rmtree(work, ignore_errors=True)


def _final_reconcile(db: Path, endpoint: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "edgebuf", "reconcile", "--db", str(db), "--endpoint", endpoint],
        check=True, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def format_restore(result: RestoreResult) -> str:
    """The restore drill's outcome as plain lines."""
    return "\n".join([
        f"restore drill: {'OK' if result.ok else 'FAILED'}",
        f"  records logged {result.logged:,}, stored {result.stored:,}, lost {result.lost},"
        f" duplicated {result.duplicated}",
        f"  the restore took {result.lost_by_restore:,} records out of the cloud;"
        f" records it lacked at worst after the restore {result.max_missing:,},"
        f" seqs missing at the end {result.final_missing}",
        *(f"  {f}" for f in result.files),
    ])  # fmt: skip
