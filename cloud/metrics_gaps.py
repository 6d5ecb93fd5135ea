"""A cheap gauge of sequence gaps per device, for the EdgebufCloudSeqGapsPersist alert.

`edgebuf_cloud_seq_missing{device_id}` counts the seqs missing among each device's newest
`window` (1,000) seq numbers. It reads the incremental gap state (`cloud.seqstate`: one
`device_seqs` row per device, the missing ranges in `seq_missing`), never the records, so
its cost does not grow with the table:

* devices: the first `max_devices` (100) rows of `device_seqs` by device id;
* per device: the missing ranges that end inside `[lo, max_seq]`, with
  `lo = max(first held seq, max_seq - window + 1)`: an index range scan of at most
  `window` ranges (a device's first held seq is 1, or one above a missing range that
  starts at 1).

The scan runs in a background thread, at most once per `ttl` (60) seconds and only when
`/metrics` is scraped; a scrape returns the last result, so the event loop never waits on
the database. `edgebuf_cloud_seq_scan_seconds` shows what the last scan cost.

What the gauge shows: a steady loss of records keeps it above zero; an edge that
reconnects after an outage opens one hole (its live lane ships the newest records first)
that closes as the backlog drains and slides out of the window once `window` live records
have arrived. Old gaps leave the window (the edge accounts for its own losses in
`edgebuf_records_evicted_total`); `GET /devices/{id}/gaps` lists all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text

from cloud.db import Database
from cloud.metrics import CloudMetrics

__all__ = ["SeqGapCollector", "watch_seq_gaps"]

log = logging.getLogger("cloud.metrics")

_DEVICES = text(
    "SELECT device_id, max_seq, contiguous_through FROM device_seqs"
    " WHERE max_seq > 0 ORDER BY device_id LIMIT :limit"
)
_FIRST_HELD = text("SELECT hi + 1 FROM seq_missing WHERE device_id = :d AND lo = 1")
_MISSING = text("SELECT lo, hi FROM seq_missing WHERE device_id = :d AND hi >= :lo")


class SeqGapCollector:
    """A prometheus_client collector; `scan()` is the whole computation (tests call it)."""

    def __init__(
        self, db: Database, *, window: int = 1000, max_devices: int = 100, ttl: float = 60.0
    ) -> None:
        self.db = db
        self.window, self.max_devices, self.ttl = window, max_devices, ttl
        self._lock = threading.Lock()
        self._running = False
        self._scanned_at = float("-inf")  # monotonic
        self.missing: dict[str, int] = {}
        self.scan_seconds = 0.0
        self.errors = 0

    def scan(self) -> dict[str, int]:
        """Compute the missing seqs per device now (synchronously) and keep the result."""
        started = time.perf_counter()
        out: dict[str, int] = {}
        with self.db.engine.connect() as conn:
            devices = list(conn.execute(_DEVICES, {"limit": self.max_devices}))
            for device, high, contiguous in devices:
                first = 1
                if int(contiguous) == 0:
                    first = int(conn.execute(_FIRST_HELD, {"d": device}).scalar_one_or_none() or 1)
                lo = max(first, int(high) - self.window + 1)
                ranges = conn.execute(_MISSING, {"d": device, "lo": lo})
                out[device] = sum(int(b) - max(int(a), lo) + 1 for a, b in ranges)
        self.missing = out
        self.scan_seconds = time.perf_counter() - started
        return out

    def _scan_in_background(self) -> None:
        try:
            self.scan()
        except Exception as exc:  # noqa: BLE001 - a failed scan must not break /metrics
            self.errors += 1
            self.missing = {}  # stale figures would mislead; the database alert covers this
            log.warning("sequence gap scan failed: %s", exc)
        finally:
            with self._lock:
                self._running = False
                self._scanned_at = time.monotonic()

    def _maybe_start_scan(self) -> None:
        with self._lock:
            if self._running or time.monotonic() - self._scanned_at < self.ttl:
                return
            self._running = True
        threading.Thread(target=self._scan_in_background, name="seq-gap-scan", daemon=True).start()

    def _families(self) -> list[Metric]:
        missing = GaugeMetricFamily(
            "edgebuf_cloud_seq_missing",
            "Seqs missing among each device's newest seq numbers (bounded: cloud/metrics_gaps.py).",
            labels=["device_id"],
        )
        for device, n in sorted(self.missing.items()):
            missing.add_metric([device], n)
        return [
            missing,
            GaugeMetricFamily(
                "edgebuf_cloud_seq_scan_seconds",
                "Duration of the last sequence gap scan.",
                value=self.scan_seconds,
            ),
            CounterMetricFamily(
                "edgebuf_cloud_seq_scan_errors",
                "Sequence gap scans that failed.",
                value=self.errors,
            ),
        ]

    def describe(self) -> list[Metric]:
        """The families without touching the database (the registry calls this on register)."""
        return self._families()

    def collect(self) -> list[Metric]:
        self._maybe_start_scan()
        return self._families()


def watch_seq_gaps(metrics: CloudMetrics, db: Database, **options: Any) -> SeqGapCollector:
    """Register the gap gauge on one app's registry (`cloud.state` does, for every app)."""
    collector = SeqGapCollector(db, **options)
    metrics.registry.register(collector)
    return collector
