"""Fleet sizing: how big a buffer volume an outage needs, measured on the real store and shipper.

A per-record simulation of 20 cameras x 22 fps x 48 h is 76 million records; this runs one
camera at a reduced sample rate (``sample_fps``, default 0.1 fps) through the real
``EnhancedAsyncLoggingClient`` (its SQLite store, capacity rules, shipping loop, recovery
and connectivity monitor, with the design's time constants) on a ``FakeClock``, behind a
``SimulatedCloud`` transport that is unreachable during the outage and works through at
most a given number of records per second of virtual time. Each sampled record stands for
``k = fps / sample_fps`` real ones, and the cloud capacity and buffer capacity given to the
sampled camera are divided by ``cameras * k``. Everything then scales linearly back:

* bytes per record (live bytes as ``capacity_bytes`` counts them, SQLite file bytes, gzip
  wire bytes) are measured, not assumed, and do not depend on the rate;
* backlog = k x cameras x the sampled backlog; the outage and drain times are the same in
  virtual seconds as for the real fleet, because arrivals and capacity are scaled alike;
* the closed forms (``backlog = cameras x fps x outage``, ``drain = backlog / (C - cameras x
  fps)``, eviction at ``capacity / (fps x live bytes per record)``) are returned next to the
  simulated figures so a reader can check one against the other.

Limits: a sampled request carries k times more real records than a real one, so per-request
latency is not modelled (``rtt`` is small); the simulated network has no timeouts.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from edgebuf.client import EnhancedAsyncLoggingClient
from edgebuf.clock import FakeClock
from edgebuf.lab.fleetcloud import SimulatedCloud
from edgebuf.lab.producer import fake_prediction

__all__ = ["CameraRun", "FleetSizing", "SimulatedCloud", "simulate_camera", "simulate_outage"]

HOUR = 3600.0
GB = 1e9


@dataclass
class FleetSizing:
    """The answer of ``simulate_outage``: fleet figures (already scaled), the measured
    per-record sizes, closed-form cross-checks, and the sampled camera's timeline."""

    cameras: int
    fps: float
    outage_hours: float
    cloud_records_per_s: float
    capacity_bytes: float | None  # given, for the whole fleet (None: unbounded)
    sample_fps: float
    scale: float  # real records per sampled record (fps / sample_fps)
    live_bytes_per_record: float
    file_bytes_per_record: float
    wire_bytes_per_record: float
    backlog_peak_records: int  # fleet
    disk_bytes_needed: float  # fleet: SQLite files at the backlog peak, plus each WAL
    capacity_bytes_needed: float  # fleet: live bytes at the peak (what capacity_bytes counts)
    disk_bytes_max: float  # fleet: the files' high-water mark over the whole run
    drain_hours: float | None  # simulated, from the cloud's return to the steady backlog
    drain_hours_analytic: float | None
    backlog_peak_analytic: int
    hours_to_90pct: float | None  # after the outage began, for capacity_bytes
    hours_to_eviction: float | None
    hours_to_eviction_analytic: float | None
    evicted_records: int  # fleet
    delivered_records: int  # fleet, stored once in the (simulated) cloud
    logged_records: int  # fleet
    pending_at_end: int  # fleet, still waiting when the run stopped
    duplicates: int  # fleet, received twice by the cloud (absorbed)
    timeline: pd.DataFrame = field(repr=False)
    wall_seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """The headline figures as a (quantity, value) table for display."""

        def h(x: float | None) -> str:
            return "never" if x is None else f"{x:,.1f} h"

        rows = [
            ("fleet", f"{self.cameras} cameras x {self.fps:g} fps, {self.outage_hours:g} h outage"),
            ("cloud capacity", f"{self.cloud_records_per_s:,.0f} records/s for the fleet"),
            ("bytes/record: capacity accounting", f"{self.live_bytes_per_record:,.0f} B"),
            ("bytes/record: SQLite file", f"{self.file_bytes_per_record:,.0f} B"),
            ("bytes/record: on the wire (gzip)", f"{self.wire_bytes_per_record:,.0f} B"),
            ("backlog peak (simulated)", f"{self.backlog_peak_records:,} records"),
            ("backlog peak (cameras x fps x outage)", f"{self.backlog_peak_analytic:,} records"),
            ("disk needed at the peak", f"{self.disk_bytes_needed / GB:,.1f} GB"),
            ("capacity_bytes needed (all cameras)", f"{self.capacity_bytes_needed / GB:,.1f} GB"),
            ("drain time (simulated)", h(self.drain_hours)),
            ("drain time (backlog at return / spare capacity)", h(self.drain_hours_analytic)),
        ]
        if self.capacity_bytes is not None:
            rows += [
                ("capacity_bytes given (all cameras)", f"{self.capacity_bytes / GB:,.1f} GB"),
                ("disk high-water mark (whole run)", f"{self.disk_bytes_max / GB:,.1f} GB"),
                ("90% rule acts after", h(self.hours_to_90pct)),
                ("eviction starts after (simulated)", h(self.hours_to_eviction)),
                ("eviction starts after (analytic)", h(self.hours_to_eviction_analytic)),
                ("records evicted (audited)", f"{self.evicted_records:,}"),
            ]
        return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


@dataclass
class CameraRun:
    """What ``simulate_camera`` saw. Times are virtual seconds from the start of the run."""

    db_path: Path | None
    cloud: SimulatedCloud
    timeline: pd.DataFrame  # one row per sample: t, backlog, rows, live/file/wal bytes, ...
    logged: int
    evicted: int
    outages: list[tuple[float, float]]
    first_eviction: float | None  # when the first record was evicted, if one was
    drained_at: float | None  # when the backlog was back to its steady level after the last outage


def simulate_camera(
    db_path: str | Path | None,
    *,
    hours: float,
    fps: float,
    cloud_records_per_s: float,
    outages: list[tuple[float, float]] = (),  # type: ignore[assignment]
    capacity_bytes: int | None = None,
    sample_every_s: float = 600.0,
    stop_when_drained: bool = False,
    seed: int = 0,
    device_id: str = "sim-cam",
    make_prediction: Callable[[random.Random, int], dict] = fake_prediction,
    **client_settings: Any,
) -> CameraRun:
    """Run one camera for ``hours`` of virtual time through the real client, on a FakeClock.

    Frames arrive every ``1/fps`` virtual seconds and are logged with ``log_prediction``; the
    client's own shipping loop (``run_once``) and connectivity probe (``check_once``) run
    whenever they asked to be woken; the cloud is a ``SimulatedCloud`` that is down during
    ``outages`` (``(start_h, end_h)`` pairs, hours from the start). Takes ``capacity_bytes``
    and any other client setting (default: the design's values: batch 32 / 10 s, probe
    every 30 s, ...).

    The buffer lives in RAM (/dev/shm, where there is one) during the run, because the
    fsync of every checkpoint would make a disk ten times slower and the simulation measures
    sizes and policy, not disk latency; at the end it is copied to ``db_path`` (an ordinary
    edgebuf buffer for ``BufferMonitor``), or dropped when ``db_path`` is None.
    """
    clock = FakeClock()
    t0 = clock.monotonic()
    windows = [(t0 + a * HOUR, t0 + b * HOUR) for a, b in outages]
    cloud = SimulatedCloud(clock, cloud_records_per_s, outages=windows)
    if capacity_bytes is not None:
        client_settings["capacity_bytes"] = int(max(64 * 1024, capacity_bytes))
    # One backlog request at a time, in the loop's own thread: the simulated cloud advances
    # the fake clock per request, which a pool of workers would do concurrently.
    client_settings.setdefault("drain_concurrency", 1)
    with tempfile.TemporaryDirectory(prefix="edgebuf-sim-", dir=_scratch_dir()) as tmp:
        work_db = Path(tmp) / "camera.db"
        client = EnhancedAsyncLoggingClient(
            "http://simulated-cloud.invalid",
            work_db,
            device_id,
            transport=cloud,
            clock=clock,
            rng=random.Random(seed + 1),
            **client_settings,
        )
        try:
            run = _drive(
                client,
                cloud,
                clock,
                random.Random(seed),
                make_prediction,
                fps=fps,
                last_outage=max(windows, default=None),
                stop_by=t0 + hours * HOUR,
                sample_every=sample_every_s,
                stop_when_drained=stop_when_drained,
            )
        finally:
            client.close(timeout=1)
        if db_path is not None:
            for suffix in ("", "-wal"):  # a WAL left by close is replayed on open
                if Path(f"{work_db}{suffix}").exists():
                    shutil.copyfile(f"{work_db}{suffix}", f"{db_path}{suffix}")
    timeline = run.pop("timeline")
    timeline["t"] -= t0
    return CameraRun(
        db_path=None if db_path is None else Path(db_path),
        cloud=cloud,
        timeline=timeline,
        outages=[(a - t0, b - t0) for a, b in windows],
        first_eviction=None if run["first_eviction"] is None else run["first_eviction"] - t0,
        drained_at=None if run["drained_at"] is None else run["drained_at"] - t0,
        logged=run["logged"],
        evicted=run["evicted"],
    )


def simulate_outage(
    cameras: int = 20,
    fps: float = 22.0,
    outage_hours: float = 48.0,
    cloud_records_per_s: float = 2_000.0,
    *,
    capacity_bytes: float | None = None,
    sample_fps: float = 0.1,
    warmup_hours: float = 0.5,
    max_drain_hours: float = 96.0,
    sample_every_s: float = 600.0,
    seed: int = 0,
    make_prediction: Callable[[random.Random, int], dict] = fake_prediction,
    **client_settings: Any,
) -> FleetSizing:
    """Simulate one sampled camera through an outage and scale the result to the fleet.

    ``cloud_records_per_s`` is what the cloud accepts from the whole fleet;
    ``capacity_bytes`` (optional) is the buffer capacity of the whole fleet, split evenly
    into each camera's ``capacity_bytes`` setting; without it the buffer is unbounded and
    the result says what is needed. The SQLite files run above ``capacity_bytes`` (pages,
    indexes, fragmentation after deletes): ``disk_bytes_max`` is what the volume must hold.
    ``client_settings`` go to the client (default: the design's values). Runs in
    seconds: the work is ``sample_fps x (warmup + outage + drain)`` real SQLite inserts
    (see ``simulate_camera``).
    """
    started = time.perf_counter()
    k = fps / sample_fps
    fleet = k * cameras
    per_camera_capacity = capacity_bytes / cameras if capacity_bytes else None
    run = simulate_camera(
        None,
        hours=warmup_hours + outage_hours + max_drain_hours,
        fps=sample_fps,
        cloud_records_per_s=cloud_records_per_s / fleet,
        outages=[(warmup_hours, warmup_hours + outage_hours)],
        capacity_bytes=None if per_camera_capacity is None else int(per_camera_capacity / k),
        sample_every_s=sample_every_s,
        stop_when_drained=True,
        seed=seed,
        make_prediction=make_prediction,
        **client_settings,
    )
    cloud, tl = run.cloud, run.timeline
    out_start, out_end = run.outages[0]
    peak = tl.loc[tl["backlog"].idxmax()]
    rows_at_peak = max(1, int(peak["rows"]))
    live_bpr = peak["live_bytes"] / rows_at_peak
    wire_bpr = cloud.gzip_bytes / cloud.gzip_records if cloud.gzip_records else float("nan")
    timeline = pd.DataFrame(
        {
            "hours": (tl["t"] - out_start) / HOUR,
            "backlog": (tl["backlog"] * fleet).round().astype("int64"),
            "live_bytes": tl["live_bytes"] * fleet,
            "disk_bytes": tl["file_bytes"] * fleet,
            "evicted": (tl["evicted"] * fleet).round().astype("int64"),
            "cloud_up": tl["cloud_up"],
        }
    )
    spare = cloud_records_per_s - cameras * fps
    peak_records = int(round(peak["backlog"] * fleet))
    # What the drain starts from: the backlog when the cloud came back (below the peak
    # when eviction already trimmed it).
    at_return = tl[tl["t"] <= out_end]["backlog"].iloc[-1] * fleet
    over90 = tl[tl["t"] >= out_start]
    if per_camera_capacity is not None:
        over90 = over90[over90["live_bytes"] >= 0.9 * per_camera_capacity / k]

    def since_outage(t: float | None) -> float | None:
        return None if t is None else (t - out_start) / HOUR

    return FleetSizing(
        cameras=cameras,
        fps=fps,
        outage_hours=outage_hours,
        cloud_records_per_s=cloud_records_per_s,
        capacity_bytes=capacity_bytes,
        sample_fps=sample_fps,
        scale=k,
        live_bytes_per_record=live_bpr,
        file_bytes_per_record=peak["file_bytes"] / rows_at_peak,
        wire_bytes_per_record=wire_bpr,
        backlog_peak_records=peak_records,
        # The WAL is bounded by the auto-checkpoint (about 4 MB), per buffer, at any rate.
        disk_bytes_needed=peak["file_bytes"] * fleet + tl["wal_bytes"].max() * cameras,
        capacity_bytes_needed=peak["live_bytes"] * fleet,
        disk_bytes_max=tl["file_bytes"].max() * fleet + tl["wal_bytes"].max() * cameras,
        drain_hours=None if run.drained_at is None else (run.drained_at - out_end) / HOUR,
        drain_hours_analytic=at_return / spare / HOUR if spare > 0 else None,
        backlog_peak_analytic=int(round(cameras * fps * outage_hours * HOUR)),
        hours_to_90pct=(
            since_outage(over90["t"].iloc[0]) if per_camera_capacity and len(over90) else None
        ),
        hours_to_eviction=since_outage(run.first_eviction),
        hours_to_eviction_analytic=(
            per_camera_capacity / (fps * live_bpr) / HOUR if per_camera_capacity else None
        ),
        evicted_records=int(round(run.evicted * fleet)),
        delivered_records=int(round(len(cloud.stored) * fleet)),
        logged_records=int(round(run.logged * fleet)),
        pending_at_end=int(round(tl["backlog"].iloc[-1] * fleet)),
        duplicates=int(round(cloud.duplicates * fleet)),
        timeline=timeline,
        wall_seconds=round(time.perf_counter() - started, 2),
    )


def _scratch_dir() -> str | None:
    """RAM (/dev/shm) when there is one, else the system's temporary directory."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _drive(
    client,
    cloud,
    clock,
    rng,
    make_prediction,
    *,
    fps,
    last_outage,
    stop_by,
    sample_every,
    stop_when_drained,
) -> dict[str, Any]:
    """The event loop of the simulation: frames, probes, the shipping loop, samples."""
    store, shipper, conn = client.store, client.shipper, client.connectivity
    interval = 1.0 / fps
    now = clock.monotonic()
    next_frame = next_probe = next_sample = now
    # Steady backlog: what waits for the batch timeout even with the cloud up.
    steady = math.ceil(fps * client.settings.batch_timeout) + 1
    frame, samples = 0, []
    drained_at = None
    while True:
        now = clock.monotonic()
        while (
            next_frame <= now and next_frame < stop_by
        ):  # frames that arrived while a request was in flight
            client.log_prediction(
                make_prediction(rng, frame),
                image_id=f"frame-{frame:08d}",
                model_version="yolov8n-sim",
                timestamp=clock.time() - (now - next_frame),
            )
            frame += 1
            next_frame += interval
        if now >= next_probe:
            conn.check_once()
            next_probe = now + conn.next_delay()
        if now >= next_sample or now >= stop_by:
            samples.append(_sample(client, cloud, now))
            next_sample = now + sample_every
            backlog = samples[-1]["backlog"]
            if last_outage is None or now < last_outage[0]:
                steady = max(steady, backlog)
            elif now >= last_outage[1] and drained_at is None and backlog <= steady:
                drained_at = now
        if now >= stop_by or (stop_when_drained and drained_at is not None):
            break
        delay = shipper.run_once()
        if delay == 0.0:
            continue
        step = min(
            x
            for x in (delay, next_frame - now, next_probe - now, next_sample - now, stop_by - now)
            if x is not None
        )
        clock.advance(max(step, 1e-3))
    first_drop = store.first_dropped_at()
    meta = store.metadata()
    first_eviction = None
    if first_drop is not None:  # wall time of the fake clock back to its monotonic axis
        first_eviction = first_drop - clock.time() + clock.monotonic()
    return {
        "timeline": pd.DataFrame(samples),
        "drained_at": drained_at,
        "first_eviction": first_eviction,
        "evicted": int(meta.get("evicted_capacity", 0)),
        "logged": frame,
    }


def _sample(client, cloud, now: float) -> dict[str, float]:
    counts = client.store.counts()
    size = client.store.size_info()
    meta = client.store.metadata()
    return {
        "t": now,
        "backlog": counts["pending"] + counts["sending"],
        "rows": sum(counts.values()),
        "live_bytes": float(meta.get("live_bytes", 0)),
        "file_bytes": float(size["file_bytes"]),
        "wal_bytes": float(size["wal_bytes"]),
        "evicted": float(meta.get("evicted_capacity", 0)),
        "cloud_up": cloud.is_up(),
    }
