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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
