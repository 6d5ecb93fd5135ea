"""Load: sixteen devices sending to two real cloud replicas on one PostgreSQL database.

Each simulated device is a thread with its own `httpx.Client`. It posts 32-record
batches with unique record ids (`<device>-<seq>`) and a per-device seq that rises without
holes, alternating batch by batch between the two replicas (`python -m cloud`
processes), and every few batches re-sends one of its earlier batches, byte for byte, to
the replica that did not store it, as an edge does after a lost acknowledgement.

Asserted at the end:
* no errors: every response is 200 (no transport error, no 4xx/5xx);
* exactly once: each new batch reports 32 accepted, each re-send 32 duplicates, and
  `GET /stats` (identical on both replicas) counts exactly the unique records sent,
  per device with no missing seq, and their detections per class once each;
  `/devices/{id}/gaps` reports `missing == 0` for every device;
* memory flat: the resident set (VmRSS) of each cloud process, sampled every few seconds,
  ends within `RSS_GROWTH_LIMIT_MB` of its sample after warm-up.

The short run is in the default suite; the several-minute run is `slow`
(`pytest -m slow tests/cloud/test_cloud_load.py`, length in EDGEBUF_LOAD_SECONDS).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.testing import CloudServer, wait_ready

DEVICES = 16
BATCH = 32
RESEND_EVERY = 5  # every 5th post of a device re-sends one of its earlier batches
RSS_GROWTH_LIMIT_MB = 25.0
SLOW_SECONDS = float(os.environ.get("EDGEBUF_LOAD_SECONDS", "180"))
T0 = 1_764_370_000.0

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not Path("/proc/self/status").exists(), reason="memory sampling reads /proc (Linux)"
    ),
]


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Device:
    """What one simulated device sent and what it was told."""

    name: str
    next_seq: int = 1
    sent: list[tuple[int, int]] = field(default_factory=list)  # (first seq, replica)
    new_batches: int = 0
    resends: int = 0
    errors: list[str] = field(default_factory=list)


def _batch(device: str, first: int, make_record: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The body of `device`'s batch starting at `first`; the same every time it is built."""
    return {
        "device_id": device,
        "batch_id": f"{device}-b{first}",
        "records": [
            make_record(
                f"{device}-{seq}",
                seq,
                timestamp=T0 + seq / 20,
                classes=("part", "defect") if seq % 7 == 0 else ("part",),
            )
            for seq in range(first, first + BATCH)
        ],
    }


def _device_loop(
    device: Device,
    index: int,
    urls: list[str],
    make_record: Callable[..., dict[str, Any]],
    start: threading.Barrier,
    seconds: float,
) -> None:
    rng = random.Random(index)
    with httpx.Client(timeout=30) as client:
        start.wait()
        deadline = time.monotonic() + seconds
        posts = 0
        while time.monotonic() < deadline:
            posts += 1
            resend = posts % RESEND_EVERY == 0 and bool(device.sent)
            if resend:
                first, stored_by = rng.choice(device.sent)
                replica = 1 - stored_by  # the other replica must recognise the records
            else:
                first = device.next_seq
                replica = (index + posts) % 2
            body = _batch(device.name, first, make_record)
            try:
                answer = client.post(f"{urls[replica]}/log", json=body)
            except httpx.HTTPError as error:
                device.errors.append(f"post {posts} to replica {replica}: {error!r}")
                return
            if answer.status_code != 200:
                device.errors.append(
                    f"post {posts} to replica {replica}: {answer.status_code} {answer.text[:200]}"
                )
                return
            counts = answer.json()
            if resend:
                device.resends += 1
                if (counts["accepted"], counts["duplicates"]) != (0, BATCH):
                    device.errors.append(f"re-send {body['batch_id']} answered {counts}")
                    return
            else:
                device.next_seq += BATCH
                device.new_batches += 1
                device.sent.append((first, replica))
                if (counts["accepted"], counts["duplicates"]) != (BATCH, 0):
                    device.errors.append(f"new batch {body['batch_id']} answered {counts}")
                    return


def _sample_rss(
    pids: list[int], every: float, stop: threading.Event, samples: list[tuple[float, list[float]]]
) -> None:
    started = time.monotonic()
    while True:
        samples.append((time.monotonic() - started, [rss_mb(pid) for pid in pids]))
        if stop.wait(every):
            samples.append((time.monotonic() - started, [rss_mb(pid) for pid in pids]))
            return


def run_load(
    database_url: str,
    make_record: Callable[..., dict[str, Any]],
    *,
    seconds: float,
    warmup: float,
    sample_every: float,
) -> dict[str, Any]:
    """Run the scenario against two fresh replicas, assert everything, return figures."""
    replicas = [CloudServer(database_url), CloudServer(database_url)]
    try:
        for replica in replicas:  # both start at once: they race to migrate
            replica.start(wait=False)
        for replica in replicas:
            wait_ready(replica.url, timeout=60, process=replica.process)
        urls = [replica.url for replica in replicas]
        pids = [replica.process.pid for replica in replicas if replica.process is not None]

        devices = [Device(f"load-cam-{n:02d}") for n in range(DEVICES)]
        start = threading.Barrier(DEVICES + 1)
        samples: list[tuple[float, list[float]]] = []
        stop_sampling = threading.Event()
        sampler = threading.Thread(
            target=_sample_rss, args=(pids, sample_every, stop_sampling, samples), daemon=True
        )
        threads = [
            threading.Thread(
                target=_device_loop,
                daemon=True,
                args=(device, n, urls, make_record, start, seconds),
            )
            for n, device in enumerate(devices)
        ]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.monotonic()
        sampler.start()
        for thread in threads:
            thread.join(timeout=seconds + 60)
        elapsed = time.monotonic() - began
        stop_sampling.set()
        sampler.join(timeout=10)

        assert not any(thread.is_alive() for thread in threads), "a device never finished"
        errors = [error for device in devices for error in device.errors]
        assert errors == [], errors[:10]

        unique = sum(device.next_seq - 1 for device in devices)
        stats = [httpx.get(f"{url}/stats", timeout=60).json() for url in urls]
        assert stats[0] == stats[1], "the replicas disagree"
        assert stats[0]["total_records"] == unique
        assert stats[0]["device_count"] == DEVICES
        defects = sum((device.next_seq - 1) // 7 for device in devices)
        assert stats[0]["detections_per_class"] == {"defect": defects, "part": unique}
        assert [
            (d["device_id"], d["count"], d["min_seq"], d["max_seq"], d["missing_seqs"])
            for d in stats[0]["devices"]
        ] == [(device.name, device.next_seq - 1, 1, device.next_seq - 1, 0) for device in devices]
        for n, device in enumerate(devices):
            gaps = httpx.get(f"{urls[n % 2]}/devices/{device.name}/gaps", timeout=60).json()
            assert (gaps["count"], gaps["missing"], gaps["gaps"]) == (device.next_seq - 1, 0, [])

        warm = next((rss for at, rss in samples if at >= warmup), None)
        assert warm is not None, f"no memory sample after the {warmup} s warm-up: {samples}"
        last = samples[-1][1]
        for pid_index, (before, after) in enumerate(zip(warm, last)):
            assert after - before <= RSS_GROWTH_LIMIT_MB, (
                f"replica {pid_index} grew from {before:.1f} to {after:.1f} MiB after warm-up; "
                f"samples (s, MiB): {[(round(at), rss) for at, rss in samples]}"
            )
        return {
            "seconds": elapsed,
            "records": unique,
            "batches": sum(device.new_batches for device in devices),
            "resends": sum(device.resends for device in devices),
            "rss_warm": warm,
            "rss_last": last,
        }
    finally:
        for replica in replicas:
            replica.close()


def _report(name: str, figures: dict[str, Any]) -> str:
    return (
        f"\n{name}: {DEVICES} devices, {figures['records']:,} records in "
        f"{figures['batches']:,} batches + {figures['resends']:,} re-sends over "
        f"{figures['seconds']:.0f} s ({figures['records'] / figures['seconds']:,.0f} rec/s); "
        "replica RSS warm/last MiB: "
        + ", ".join(
            f"{w:.0f}/{lst:.0f}" for w, lst in zip(figures["rss_warm"], figures["rss_last"])
        )
    )


def test_sixteen_devices_two_replicas_short(pg_database_factory, helpers, capsys):
    figures = run_load(pg_database_factory(), helpers.record, seconds=10, warmup=4, sample_every=1)
    with capsys.disabled():
        print(_report("load (short)", figures))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_SECONDS + 240)
def test_sixteen_devices_two_replicas_several_minutes(pg_database_factory, helpers, capsys):
    figures = run_load(
        pg_database_factory(),
        helpers.record,
        seconds=SLOW_SECONDS,
        warmup=min(30, SLOW_SECONDS / 4),
        sample_every=5,
    )
    with capsys.disabled():
        print(_report("load (slow)", figures))
