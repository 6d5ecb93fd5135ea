"""Long-outage soak (slow): a backlog of one million records (about 12.6 hours of one
camera at 22 fps) built on disk, then drained to the real cloud. Zero loss, zero
duplicates, edge memory flat, drain time reported. Run with `pytest -m slow`."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from cloud.testing import CloudServer
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.lab.producer import command as producer_command
from edgebuf.lab.verify import fetch_gaps

N = 1_000_000


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_one_million_record_backlog_drains_exactly_once(tmp_path, capsys):
    db = tmp_path / "edge.db"
    builder = EnhancedAsyncLoggingClient("http://127.0.0.1:9", db, "soak-cam")
    pred = {"detections": [{"class_name": "part", "confidence": 0.9, "box": [1, 2, 3, 4]}]}
    batch = [{"prediction": pred, "image_id": "f"}] * 2000
    for _ in range(N // len(batch)):
        builder.log_predictions(batch)
    builder.close()
    with CloudServer(f"sqlite:///{tmp_path}/cloud.db") as cloud:
        started = time.monotonic()
        proc = subprocess.Popen(
            producer_command(db, cloud.url, "soak-cam", count=0, flush=1200),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        samples = []
        while proc.poll() is None:
            samples.append(rss_mb(proc.pid))
            time.sleep(1.0)
        drain_s = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr.read()
        stats = httpx.get(f"{cloud.url}/stats", params={"device_id": "soak-cam"}, timeout=60).json()
        gaps = fetch_gaps(cloud.url, "soak-cam")
    assert stats["total_records"] == N  # every record once (unique key: never twice)
    assert gaps["missing"] == 0 and gaps["count"] == N
    warm = samples[min(5, len(samples) - 1)]
    peak = max(samples)
    assert peak < 150, samples
    assert peak - warm < 40, samples  # flat: the backlog is never loaded into memory
    with capsys.disabled():
        print(
            f"\nsoak: {N} records drained in {drain_s:.0f} s ({N / drain_s:,.0f} rec/s), "
            f"edge RSS warm {warm:.0f} MB, peak {peak:.0f} MB"
        )
