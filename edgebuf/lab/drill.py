"""``edgebuf drill``: an outage drill on real processes that proves zero loss, zero duplicates.

It starts the cloud service as a real uvicorn process on a free local port with its own
SQLite file (or uses ``--endpoint``), runs one simulated camera process per device
(``edgebuf.lab.producer``) that logs predictions through the buffered client, kills the cloud
for the outage, SIGKILLs and restarts the camera processes in the middle of it, brings the
cloud back, waits for the backlog to drain, and then reads back from ``GET /predictions``
and ``/devices/{id}/gaps`` what arrived. Exit status 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from edgebuf.lab.producer import command as producer_command
from edgebuf.lab.verify import audit, fetch_predictions
from edgebuf.ops.monitor import BufferMonitor


@dataclass
class DrillConfig:
    """Drill parameters. Time constants of the client are scaled down so a drill takes
    seconds, not the design's minutes (batch timeout 10 s, probe every 30 s)."""

    duration: float = 20.0  # seconds of camera activity
    fps: float = 50.0  # frames per second per camera (the design's ~22 fps or faster)
    outage_start: float = 5.0  # seconds into the drill the cloud goes down
    outage: float = 8.0  # seconds the cloud stays down (0 = no outage)
    crash: bool = True  # SIGKILL and restart every camera process mid-outage
    devices: int = 1
    out_dir: Path = Path("drill-out")
    endpoint: str | None = None  # an already running cloud (no outage can be injected then)
    seed: int = 0
    batch_timeout: float = 0.5
    monitor_interval: float = 1.0
    drain_timeout: float = 120.0


@dataclass
class DeviceResult:
    device: str
    logged: int
    stored: int
    lost: int
    duplicated: int
    unexpected: int
    gap_ranges: int


@dataclass
class DrillResult:
    config: dict
    devices: list[DeviceResult]
    drain_seconds: float | None
    latency_s: dict[str, float]
    events: list[dict]
    files: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(d.lost == 0 and d.duplicated == 0 and d.gap_ranges == 0 for d in self.devices)


class _Camera:
    """One producer process (restartable) and the record ids it has printed."""

    def __init__(self, device: str, db: Path, endpoint: str, cfg: DrillConfig, seed: int):
        self.device, self.db, self.endpoint, self.cfg, self.seed = device, db, endpoint, cfg, seed
        self.total = int(cfg.duration * cfg.fps)
        self.ids: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.stderr = ""

    def start(self) -> None:
        done = len(self.ids)
        self.proc = subprocess.Popen(
            producer_command(
                self.db,
                self.endpoint,
                self.device,
                count=self.total - done,
                start_frame=done,
                fps=self.cfg.fps,
                seed=self.seed + done,
                flush=self.cfg.drain_timeout,
                batch_timeout=self.cfg.batch_timeout,
                monitor_interval=self.cfg.monitor_interval,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if len(line) == 32:
                self.ids.append(line)
        self.stderr = proc.stderr.read() if proc.stderr else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    return {f"p{q}": round(float(np.percentile(arr, q)), 3) for q in (50, 90, 99)} | {
        "max": round(float(arr.max()), 3)
    }


def _drain_seconds(backlogs: dict, events: list[dict]) -> float | None:
    """Seconds from the cloud's return until every device's backlog is back to its
    steady level before the outage (the most it held while the cloud was up)."""
    import pandas as pd

    start = next((e["t"] for e in events if e["kind"] == "outage_start"), None)
    end = next((e["t"] for e in events if e["kind"] == "outage_end"), None)
    if start is None or end is None:
        return None
    worst = 0.0
    for frame in backlogs.values():
        if frame.empty:
            continue
        before = frame[frame.index < pd.Timestamp(start, unit="s", tz="UTC")]["backlog"]
        steady = int(before.max()) if len(before) else 0
        after = frame[frame.index >= pd.Timestamp(end, unit="s", tz="UTC")]["backlog"]
        back = after[after <= steady]
        if len(back):
            worst = max(worst, back.index[0].timestamp() - end)
        else:
            return None
    return round(worst, 2)


def run_drill(cfg: DrillConfig, *, progress: bool = True) -> DrillResult:
    """Run one drill end to end and return its result (also written to ``out_dir``)."""
    from tqdm import tqdm

    from edgebuf.lab import plots

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="edgebuf-drill-"))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    server = None
    if cfg.endpoint is None:
        from cloud.testing import CloudServer

        server = CloudServer(f"sqlite:///{work}/cloud.db")
        server.start()
        endpoint = server.url
    else:
        endpoint = cfg.endpoint.rstrip("/")
    # A shared cloud may hold earlier drills: give this run's devices their own names.
    prefix = "drill-cam" if server is not None else f"drill-{int(time.time())}-cam"
    cams = [
        _Camera(f"{prefix}{i + 1}", work / f"cam{i + 1}.db", endpoint, cfg, cfg.seed + i)
        for i in range(cfg.devices)
    ]
    events: list[dict] = []

    def event(kind: str, **info) -> None:
        events.append({"t": time.time(), "kind": kind, **info})

    outage = cfg.outage > 0 and server is not None
    plan = []
    if outage:
        plan.append((cfg.outage_start, "outage_start"))
        if cfg.crash:
            plan.append((cfg.outage_start + cfg.outage / 2, "crash"))
        plan.append((cfg.outage_start + cfg.outage, "outage_end"))
    elif cfg.crash:
        plan.append((cfg.duration / 2, "crash"))
    t0_wall = time.time()
    t0 = time.monotonic()
    try:
        event("drill_start")
        for cam in cams:
            cam.start()
        bar = tqdm(
            total=int(cfg.duration), desc="drill", unit="s", disable=not progress, file=sys.stderr
        )
        while plan or time.monotonic() - t0 < cfg.duration:
            now = time.monotonic() - t0
            while plan and plan[0][0] <= now:
                _, kind = plan.pop(0)
                if kind == "outage_start":
                    server.kill()
                    event("outage_start")
                elif kind == "outage_end":
                    server.start()
                    event("outage_end")
                elif kind == "crash":
                    for cam in cams:
                        cam.kill()
                        event("edge_killed", device=cam.device, logged_so_far=len(cam.ids))
                        cam.start()
                        event("edge_restarted", device=cam.device)
            shown = min(int(cfg.duration), int(now))
            if shown > bar.n:
                bar.update(shown - bar.n)
            time.sleep(0.05)
        bar.close()
        if progress:
            click.echo("camera time over; waiting for the backlog to drain...", err=True)
        for cam in cams:
            code = cam.wait(timeout=cfg.drain_timeout + 30)
            if code != 0:
                raise RuntimeError(f"{cam.device} did not drain (exit {code}): {cam.stderr[-500:]}")
        event("drained")
        results, latencies, backlogs = [], [], {}
        for cam in cams:
            a = audit(endpoint, cam.device, cam.ids)
            results.append(
                DeviceResult(
                    cam.device,
                    a.logged,
                    a.stored,
                    len(a.lost),
                    sum(n - 1 for n in a.duplicated.values()),
                    a.unexpected,
                    len(a.gaps),
                )
            )
            latencies += [
                it["received_at"] - it["timestamp"]
                for it in fetch_predictions(endpoint, cam.device)
            ]
            with BufferMonitor(cam.db) as mon:
                frame = mon.export_stats(freq="250ms").backlog
            backlogs[cam.device] = frame
        drain = _drain_seconds(backlogs, events)
        result = DrillResult(
            config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
            | {"endpoint": endpoint, "outage_injected": outage},
            devices=results,
            drain_seconds=drain,
            latency_s=_percentiles(latencies),
            events=[{**e, "t": round(e["t"] - t0_wall, 3)} for e in events],
        )
        result.files.append(
            str(plots.plot_backlog(backlogs, events, out / "backlog.png", t0=t0_wall))
        )
        result.files.append(str(plots.plot_latency(latencies, out / "latency.png")))
    finally:
        for cam in cams:
            cam.kill()
        if server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)
    result.elapsed_s = round(time.monotonic() - started, 1)
    summary = out / "summary.json"
    summary.write_text(json.dumps(asdict(result) | {"ok": result.ok}, indent=2))
    result.files.append(str(summary))
    return result


def format_summary(result: DrillResult) -> str:
    """The drill's outcome as a plain table."""
    cfg = result.config
    lines = [
        f"edgebuf drill: {cfg['devices']} camera(s) x {cfg['duration']:g} s at {cfg['fps']:g} fps; "
        + (
            f"cloud down {cfg['outage_start']:g}-{cfg['outage_start'] + cfg['outage']:g} s"
            if cfg["outage_injected"]
            else "no outage injected"
        )
        + ("; cameras SIGKILLed and restarted mid-outage" if cfg["crash"] else ""),
        f"time constants scaled for the drill: batch timeout {cfg['batch_timeout']:g} s "
        f"(design 10 s), probe every {cfg['monitor_interval']:g} s (design 30 s)",
        "",
        f"{'device':<28} {'logged':>7} {'stored':>7} {'lost':>5} {'dup':>5} {'extra':>6} {'gaps':>5}",
    ]
    for d in result.devices:
        lines.append(
            f"{d.device:<28} {d.logged:>7} {d.stored:>7} {d.lost:>5} {d.duplicated:>5}"
            f" {d.unexpected:>6} {d.gap_ranges:>5}"
        )
    lat = result.latency_s
    lines += [
        "",
        f"time to drain after the outage: "
        f"{result.drain_seconds if result.drain_seconds is not None else 'n/a'} s",
        "delivery latency (s): " + ", ".join(f"{k} {v}" for k, v in lat.items()),
        "('extra' = committed just before a SIGKILL, before the camera could print its id:"
        " stored once, not a loss)",
        f"verdict: {'PASS - zero loss, zero duplicates' if result.ok else 'FAIL'}"
        f"  ({result.elapsed_s} s)",
        "files: " + ", ".join(result.files),
    ]
    return "\n".join(lines)


@click.command("drill")
@click.option(
    "--duration", type=float, default=20.0, show_default=True, help="Seconds of camera activity."
)
@click.option("--fps", type=float, default=50.0, show_default=True, help="Frames/s per camera.")
@click.option("--outage-start", type=float, default=5.0, show_default=True)
@click.option(
    "--outage",
    type=float,
    default=8.0,
    show_default=True,
    help="Seconds the cloud is down (0: none).",
)
@click.option(
    "--crash/--no-crash",
    default=True,
    show_default=True,
    help="SIGKILL and restart the camera processes mid-outage.",
)
@click.option("--devices", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("drill-out"),
    show_default=True,
)
@click.option("--endpoint", default=None, help="Use an already running cloud (no outage then).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-timeout", type=float, default=0.5, show_default=True)
@click.option("--monitor-interval", type=float, default=1.0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--restore-cloud-backup",
    is_flag=True,
    help="Instead: replace the cloud's database by an older backup mid-run; reconciliation "
    "must make every record arrive exactly once (edgebuf.lab.restore).",
)
def drill_command(quiet: bool, restore_cloud_backup: bool, **options) -> None:
    """Run an outage drill on real processes; exit 1 if anything is lost or duplicated."""
    if restore_cloud_backup:
        from edgebuf.lab.restore import RestoreConfig, format_restore, run_restore_drill

        restore = run_restore_drill(
            RestoreConfig(
                duration=options["duration"],
                fps=options["fps"],
                devices=options["devices"],
                out_dir=options["out_dir"],
                seed=options["seed"],
            )  # fmt: skip
        )
        click.echo(format_restore(restore))
        sys.exit(0 if restore.ok else 1)
    cfg = DrillConfig(**options)
    if cfg.outage and cfg.outage_start + cfg.outage > cfg.duration:
        raise click.BadParameter("the outage must end within --duration")
    result = run_drill(cfg, progress=not quiet)
    click.echo(format_summary(result))
    if not result.ok:
        sys.exit(1)
