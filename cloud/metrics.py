"""Prometheus metrics of one app, in a registry of its own.

A per-app `CollectorRegistry` (not prometheus_client's global one) lets tests and drills
build many apps in one process without "duplicated timeseries" errors. Request paths are
labelled with the route template (`/devices/{device_id}/gaps`), never the raw path, so a
scanner probing random URLs cannot blow up the label cardinality.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = ["CloudMetrics", "MetricsMiddleware"]

_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CloudMetrics:
    """The counters and histograms the service exports on `/metrics`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgebuf_cloud_requests",
            "HTTP requests by route template, method and status code.",
            ["path", "method", "status"],
            registry=self.registry,
        )
        self.records_accepted = Counter(
            "edgebuf_cloud_records_accepted",
            "Records newly stored by POST /log.",
            registry=self.registry,
        )
        self.records_duplicate = Counter(
            "edgebuf_cloud_records_duplicate",
            "Records in POST /log that were already stored (retries), not stored again.",
            registry=self.registry,
        )
        self.batches = Counter(
            "edgebuf_cloud_batches",
            "Batches stored by POST /log.",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "edgebuf_cloud_batch_seconds",
            "Time to decode, validate and store one batch (successful POST /log).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.db_unavailable = Counter(
            "edgebuf_cloud_db_unavailable",
            "Requests answered 503 because the database could not serve them, by reason.",
            ["reason"],
            registry=self.registry,
        )

        add_retention_metrics(self)

    def render(self) -> bytes:
        """Return the registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware counting responses (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: Any, metrics: CloudMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before answering, ServerErrorMiddleware sends 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()


def add_retention_metrics(metrics: CloudMetrics) -> None:
    """Counters of retention and maintenance (issue 13), on `metrics`' registry."""
    metrics.records_expired = Counter(  # type: ignore[attr-defined]
        "edgebuf_cloud_records_expired",
        "Records older than the retention window that arrived late: acknowledged (their "
        "seqs held, counted in records_accepted), not stored.",
        registry=metrics.registry,
    )
    metrics.maintenance_runs = Counter(  # type: ignore[attr-defined]
        "edgebuf_cloud_maintenance_runs",
        "Maintenance rounds by outcome (ran, skipped: another replica held the lock, failed).",
        ["outcome"],
        registry=metrics.registry,
    )
    metrics.partitions_dropped = Counter(  # type: ignore[attr-defined]
        "edgebuf_cloud_partitions_dropped",
        "Day partitions dropped by retention (PostgreSQL).",
        registry=metrics.registry,
    )
    metrics.rows_expired = Counter(  # type: ignore[attr-defined]
        "edgebuf_cloud_rows_expired",
        "Stored rows removed by retention (chunked deletes; rows of dropped partitions "
        "are not counted one by one).",
        registry=metrics.registry,
    )
