"""Drill plots: backlog over time with the outage shaded, and delivery latency.

Small PNGs (matplotlib, Agg backend) used by ``edgebuf drill`` and the notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Lay out, write and close a figure (closing keeps long notebooks' memory flat)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_backlog(
    backlogs: dict[str, pd.DataFrame],
    events: Sequence[dict],
    path: str | Path,
    *,
    t0: float,
) -> Path:
    """Backlog per device (records on disk, not yet acknowledged) against drill seconds.

    ``events`` are timeline entries ``{"t": wall seconds, "kind": ...}``; outages are shaded
    between ``outage_start`` and ``outage_end``, crashes drawn as vertical lines.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    for device, frame in backlogs.items():
        if frame.empty:
            continue
        secs = frame.index.map(lambda ts: ts.timestamp() - t0)
        ax.step(secs, frame["backlog"], where="post", label=device, linewidth=1.2)
    starts = [e["t"] - t0 for e in events if e["kind"] == "outage_start"]
    ends = [e["t"] - t0 for e in events if e["kind"] == "outage_end"]
    for i, start in enumerate(starts):
        end = ends[i] if i < len(ends) else ax.get_xlim()[1]
        ax.axvspan(start, end, color="tab:red", alpha=0.12, label="cloud down" if i == 0 else None)
    for i, e in enumerate(e for e in events if e["kind"] == "edge_killed"):
        ax.axvline(
            e["t"] - t0,
            color="black",
            linestyle="--",
            linewidth=1,
            label="edge SIGKILL" if i == 0 else None,
        )
    ax.set_xlabel("drill time (s)")
    ax.set_ylabel("records waiting on disk")
    ax.set_title("Backlog during the drill")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_latency(latencies_s: Sequence[float], path: str | Path) -> Path:
    """Histogram of delivery latency (prediction time to cloud receipt), log-scaled x."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    values = np.asarray([v for v in latencies_s if v is not None and v > 0], dtype=float)
    if len(values):
        bins = np.logspace(np.log10(max(values.min(), 1e-3)), np.log10(values.max() * 1.01), 40)
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
        for q, style in ((50, "-"), (99, "--")):
            ax.axvline(
                np.percentile(values, q),
                color="black",
                linestyle=style,
                linewidth=1,
                label=f"p{q} {np.percentile(values, q):.2f} s",
            )
        ax.legend(fontsize=8)
    ax.set_xlabel("delivery latency (s): prediction time to cloud receipt")
    ax.set_ylabel("records")
    ax.set_title("Delivery latency")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _shade_outages(ax, events: Sequence[dict], t0: float, *, label: str = "fault") -> None:
    """Shade every ``outage_start``..``outage_end`` stretch; label it with its ``mode``."""
    open_at, first, last_mode = None, True, None
    for e in events:
        if e["kind"] == "outage_start" and open_at is None:
            open_at = e
        elif e["kind"] == "outage_end" and open_at is not None:
            ax.axvspan(
                open_at["t"] - t0,
                e["t"] - t0,
                color="tab:red",
                alpha=0.12,
                label=label if first else None,
            )
            if open_at.get("mode") and open_at["mode"] != last_mode:
                last_mode = open_at["mode"]
                ax.annotate(
                    open_at["mode"],
                    (open_at["t"] - t0, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -10),
                    textcoords="offset points",
                    fontsize=7,
                )
            open_at, first = None, False


OUTCOME_ORDER = (
    "forwarded",
    "slowed",
    "dropped_ack",
    "injected",
    "hung",
    "reset",
    "upstream_error",
)


def plot_requests(
    requests: Sequence[dict],
    events: Sequence[dict],
    path: str | Path,
    *,
    t0: float,
    title: str = "Requests through the fault proxy",
) -> Path:
    """Every request a ``FaultProxy`` saw, one lane per outcome, against seconds since ``t0``.

    ``POST /log`` requests are dots, ``/health`` probes small ticks; fault stretches from
    ``events`` are shaded and labelled with their mode.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    seen = [o for o in OUTCOME_ORDER if any(r["outcome"] == o for r in requests)]
    seen += sorted({r["outcome"] for r in requests} - set(seen))
    lane = {o: i for i, o in enumerate(seen)}
    for is_log, marker, size, name in ((True, "o", 14, "POST /log"), (False, "|", 30, "probe")):
        rows = [r for r in requests if (r["path"] == "/log") == is_log]
        if rows:
            ax.scatter(
                [r["t"] - t0 for r in rows],
                [lane[r["outcome"]] + (0.0 if is_log else 0.25) for r in rows],
                s=size,
                marker=marker,
                alpha=0.7,
                label=name,
            )
    _shade_outages(ax, events, t0)
    ax.set_yticks(range(len(seen)), seen, fontsize=8)
    ax.set_ylim(-1.1, len(seen) - 0.2)  # the bottom band holds the legend
    ax.set_xlabel("seconds")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_fleet(
    timeline: pd.DataFrame,
    path: str | Path,
    *,
    capacity_bytes: float | None = None,
    title: str = "Fleet backlog and buffer disk through the outage",
) -> Path:
    """Backlog (million records) and buffer disk (GB) against hours since the outage began.

    ``timeline`` is ``FleetSizing.timeline`` (columns ``hours``, ``backlog``, ``disk_bytes``,
    ``cloud_up``); ``capacity_bytes`` draws the configured capacity of the whole fleet.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    hours = timeline["hours"]
    ax.plot(hours, timeline["backlog"] / 1e6, color="tab:blue", label="backlog (M records)")
    ax.set_ylabel("backlog (million records)")
    ax.set_xlabel("hours since the cloud went away")
    down = hours[~timeline["cloud_up"].astype(bool)]
    if len(down):
        ax.axvspan(down.min(), down.max(), color="tab:red", alpha=0.12, label="cloud down")
    disk = ax.twinx()
    disk.plot(
        hours,
        timeline["disk_bytes"] / 1e9,
        color="tab:green",
        linestyle="--",
        label="buffer files (GB)",
    )
    if capacity_bytes:
        disk.axhline(capacity_bytes / 1e9, color="black", linewidth=1, label="capacity_bytes")
    disk.set_ylabel("GB on disk")
    lines = ax.get_legend_handles_labels()
    more = disk.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=7)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_frame(
    frame: pd.DataFrame | pd.Series,
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    kind: str = "line",
    logy: bool = False,
) -> Path:
    """A small chart of a DataFrame's columns (or one Series) against its index."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    frame.plot(ax=ax, kind=kind, logy=logy, legend=isinstance(frame, pd.DataFrame))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if isinstance(frame, pd.DataFrame):
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gaps(
    samples: Sequence[dict], events: Sequence[dict], path: str | Path, *, t0: float
) -> Path:
    """Records logged that the cloud does not hold, over time (``samples``: ``{"t",
    "device", "missing"}``), with the drill's backup and restore moments marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3), dpi=100)
    for device in sorted({s["device"] for s in samples}):
        rows = [s for s in samples if s["device"] == device]
        ax.step([s["t"] - t0 for s in rows], [s["missing"] for s in rows], where="post",
                label=device)  # fmt: skip
    for e in events:
        if e["kind"] in ("cloud_backup", "cloud_restored"):
            ax.axvline(e["t"] - t0, color="tab:red" if e["kind"] == "cloud_restored" else "grey",
                       linestyle="--", linewidth=1)  # fmt: skip
            ax.annotate(e["kind"].replace("_", " "), (e["t"] - t0, ax.get_ylim()[1] * 0.9),
                        fontsize=7, rotation=90, va="top")  # fmt: skip
    ax.set_xlabel("seconds")
    ax.set_ylabel("logged, not held by the cloud")
    ax.set_title("Cloud restored from a backup: reconciliation closes the gap")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
