"""A cheap gauge of sequence gaps per device, for the EdgebufCloudSeqGapsPersist alert.

`edgebuf_cloud_seq_missing{device_id}` counts the seqs missing among each device's newest
`window` (1,000) seq numbers. The cloud's gap state proper is being rebuilt elsewhere;
until then this reads the store, bounded so that its cost does not grow with the table:

* devices: the first `max_devices` (100) device ids, found by a loose index scan (one
  index seek per device, never a scan of the table);
* per device: `(hi - lo + 1) - count(DISTINCT seq)` over `[lo, hi]`, with `hi = max(seq)`
  and `lo = max(min(seq), hi - window + 1)`: two index seeks and an index range scan of
  about `window` entries on the `(device_id, seq)` index.

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

_DEVICES = text("""
WITH RECURSIVE d(device_id, n) AS (
    SELECT min(device_id), 1 FROM predictions
    UNION ALL
    SELECT (SELECT min(p.device_id) FROM predictions p WHERE p.device_id > d.device_id), n + 1
    FROM d WHERE d.device_id IS NOT NULL AND n < :limit
)
SELECT device_id FROM d WHERE device_id IS NOT NULL
""")
_RANGE = text(
    "SELECT (SELECT min(seq) FROM predictions WHERE device_id = :d),"
    " (SELECT max(seq) FROM predictions WHERE device_id = :d)"
)
_DISTINCT = text(
    "SELECT count(DISTINCT seq) FROM predictions WHERE device_id = :d AND seq >= :lo AND seq <= :hi"
)


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
            devices = [row[0] for row in conn.execute(_DEVICES, {"limit": self.max_devices})]
            for device in devices:
                low, high = conn.execute(_RANGE, {"d": device}).one()
                if high is None:
                    continue
                lo = max(int(low), int(high) - self.window + 1)
                present = conn.execute(_DISTINCT, {"d": device, "lo": lo, "hi": int(high)})
                out[device] = int(high) - lo + 1 - int(present.scalar_one())
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
