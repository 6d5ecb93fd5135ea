"""What one app instance owns, reachable from every request as `request.app.state.cloud`.

Keeping these on the app (not in module globals) is what lets a test process build many
independent apps, each with its own settings, engine, keys and metrics registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from cloud.auth import Authenticator
from cloud.db import Database
from cloud.ingest import BatchStore
from cloud.maintenance import Maintenance
from cloud.metrics import CloudMetrics
from cloud.metrics_gaps import watch_seq_gaps
from cloud.models import LogBatch, batch_model
from cloud.settings import CloudSettings

__all__ = ["CloudState", "get_state"]


@dataclass(frozen=True)
class CloudState:
    """Settings, database, writer, authenticator and metrics of one app."""

    settings: CloudSettings
    db: Database
    store: BatchStore
    auth: Authenticator
    metrics: CloudMetrics
    batch_model: type[LogBatch]
    maintenance: Maintenance = field(repr=False, default=None)  # type: ignore[assignment]

    @classmethod
    def build(cls, settings: CloudSettings) -> CloudState:
        """Create everything an app needs (the engine connects lazily, on first use)."""
        db = Database(settings)
        metrics = CloudMetrics()
        watch_seq_gaps(metrics, db)  # issue 15: the gap gauge the alerting rules read
        store = BatchStore(db, settings.retention_days)
        return cls(
            settings=settings,
            db=db,
            store=store,
            auth=Authenticator(settings),
            metrics=metrics,
            batch_model=batch_model(settings.max_batch_records),
            maintenance=Maintenance(db, settings, metrics, on_cutoff=store.raise_cutoff),
        )


def get_state(request: Request) -> CloudState:
    """Return the state of the app serving `request`."""
    state: CloudState = request.app.state.cloud
    return state
