"""The edge service's Prometheus figures read from the buffer: record counters (persistent,
they never reset on restart), backlog, capacity, disk, delivery. What the alerting rules and
the dashboard in ``deploy/`` read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebuf.service.edge import EdgeService


class BufferCollector:
    """Buffer figures read from SQLite at scrape time (the store is the source of truth)."""

    def __init__(self, service: EdgeService) -> None:
        self.service = service

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import GaugeMetricFamily

        svc = self.service
        ok, _ = svc.ready()
        yield GaugeMetricFamily(
            "edge_ready",
            "1 when the model is loaded and the buffer writable.",
            value=1 if ok else 0,
        )
        store = svc.client.store
        if store.closed:
            return
        records = GaugeMetricFamily(
            "edgebuf_buffer_records", "Records in the buffer by status.", labels=["status"]
        )
        counts = store.counts()
        for status, n in counts.items():
            records.add_metric([status], n)
        yield records
        oldest = store.oldest_pending()
        age = svc.client.clock.time() - oldest[1] if oldest else 0.0
        yield GaugeMetricFamily(
            "edgebuf_buffer_oldest_pending_age_seconds",
            "Age of the oldest undelivered record.",
            value=age,
        )
        yield GaugeMetricFamily(
            "edgebuf_cloud_up",
            "1 while the cloud answers its probe.",
            value=0 if svc.client.connectivity.is_down else 1,
        )
        yield from _alerting_families(svc, counts)


# --- issue 15: figures the alerting rules and the dashboard read (deploy/prometheus/,
# deploy/grafana/). Counters come from the buffer's persistent counters, so they survive
# restarts and never reset when the process does.
_RECORD_COUNTERS = (
    ("edgebuf_records_buffered", "total_buffered", "Records committed to the buffer."),
    ("edgebuf_records_sent", "total_sent", "Records acknowledged by the cloud."),
    (
        "edgebuf_records_dead_lettered",
        "total_failed",
        "Records dead-lettered (status failed: refused by the cloud as poison).",
    ),
    ("edgebuf_records_requeued", "total_requeued", "Dead-lettered records put back to pending."),
    (
        "edgebuf_records_evicted",
        "evicted_capacity",
        "Pending records evicted by the overflow policy (lost, listed in dropped_records).",
    ),
    ("edgebuf_records_cleaned", "total_cleaned", "Delivered records deleted by cleanup."),
    (
        "edgebuf_log_rejected",
        "rejected_full",
        "log calls refused because the buffer was full (overflow_policy=reject).",
    ),
)


def _alerting_families(svc: EdgeService, counts: dict[str, int]) -> Iterator[Any]:
    """Counters, capacity, disk and delivery figures (cheap: one metadata read, one statfs)."""
    import shutil

    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    client = svc.client
    meta = client.store.metadata()
    for name, key, doc in _RECORD_COUNTERS:
        yield CounterMetricFamily(name, doc, value=float(meta.get(key, 0)))
    yield GaugeMetricFamily(
        "edgebuf_buffer_backlog",
        "Records not yet delivered (pending + sending).",
        value=counts["pending"] + counts["sending"],
    )
    live, capacity = float(meta.get("live_bytes", 0)), float(client.settings.capacity_bytes)
    yield GaugeMetricFamily(
        "edgebuf_buffer_live_bytes",
        "Bytes held in records (what the capacity limit counts).",
        value=live,
    )
    yield GaugeMetricFamily(
        "edgebuf_buffer_capacity_bytes",
        "The configured capacity (EDGEBUF_CAPACITY_BYTES).",
        value=capacity,
    )
    yield GaugeMetricFamily(
        "edgebuf_buffer_capacity_used_ratio",
        "live_bytes / capacity_bytes (the overflow policy acts at 1).",
        value=live / capacity,
    )
    disk = shutil.disk_usage(client.store.path.parent)
    yield GaugeMetricFamily(
        "edgebuf_disk_free_bytes", "Free bytes on the buffer's file system.", value=disk.free
    )
    yield GaugeMetricFamily(
        "edgebuf_disk_total_bytes", "Size of the buffer's file system.", value=disk.total
    )
    stats = client.sender.stats
    yield GaugeMetricFamily(
        "edgebuf_last_success_timestamp_seconds",
        "Wall time of the last acknowledged batch (0: none since start).",
        value=stats.last_success or 0.0,
    )
    yield GaugeMetricFamily(
        "edgebuf_send_consecutive_failures",
        "Failed send attempts since the last success.",
        value=client.shipper.failures,
    )
