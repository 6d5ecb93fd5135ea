"""The buffer's full status as a plain dict: what ``get_full_status`` and ``edgebuf status``
show. Read from SQLite, plus a ``DeliveryState`` when a client is running."""

from __future__ import annotations

import datetime as dt
import shutil
from typing import Any

from edgebuf.delivery.state import TLS, DeliveryState, Fault
from edgebuf.store import LocalBufferManager
from edgebuf.store.schema import SEQ_PREFIX


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC string (None for None or 0)."""
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def buffer_status(
    store: LocalBufferManager,
    *,
    capacity_bytes: int,
    device_id: str | None = None,
    delivery: DeliveryState | None = None,
) -> dict[str, Any]:
    """Counts by status, oldest pending age, size and capacity, free disk, counters; with
    ``delivery``: connectivity, last success / error, send rate, time to drain and the
    delivery fault in force (``fault``: kind, reason, since; ``tls_error``: its reason when
    it is a TLS failure)."""
    now = store.clock.time()
    counts = store.counts()
    meta = store.metadata()
    size = store.size_info()
    oldest = store.oldest_pending()
    disk = shutil.disk_usage(store.path.parent)
    live = int(meta.get("live_bytes", 0))
    backlog = counts["pending"] + counts["sending"]
    unconfirmed = store.count_unconfirmed()
    status: dict[str, Any] = {
        "device_id": device_id,
        "db_path": str(store.path),
        "generated_at": iso(now),
        "counts": counts,
        "backlog": backlog,
        # Delivered rows: confirmed by the cloud's own account (reconciliation), or not yet.
        "delivered": {"confirmed": counts["sent"] - unconfirmed, "unconfirmed": unconfirmed},
        "oldest_pending_age_s": round(now - oldest[1], 3) if oldest else None,
        "oldest_pending_timestamp": iso(oldest[0]) if oldest else None,
        "database": {
            "file_bytes": size["file_bytes"],
            "wal_bytes": size["wal_bytes"],
            "live_bytes": live,
            "capacity_bytes": capacity_bytes,
            "capacity_used_pct": round(100.0 * live / capacity_bytes, 2),
        },
        "disk": {"free_bytes": disk.free, "total_bytes": disk.total},
        "counters": {
            k: int(v)
            for k, v in meta.items()
            if not k.startswith(SEQ_PREFIX) and k != "last_cleanup"
        },
        "last_cleanup": iso(meta.get("last_cleanup")),
        "sequences": {
            k[len(SEQ_PREFIX) :]: int(v) for k, v in meta.items() if k.startswith(SEQ_PREFIX)
        },
        "dropped_by_reason": store.dropped_by_reason(),
        "pending_error": _pending_error(store),
    }
    if delivery is None:
        status["connectivity"] = {"state": "not running"}
        status["delivery"] = {}
        return status
    rate = delivery.send_rate_per_s
    status["connectivity"] = {
        "state": delivery.connectivity,
        "endpoint": delivery.endpoint,
        "last_probe_at": iso(delivery.last_probe_at),
        "last_change_at": iso(delivery.last_change_at),
    }
    status["delivery"] = {
        "last_success_at": iso(delivery.last_success_at),
        "last_error": delivery.last_error,
        "last_error_at": iso(delivery.last_error_at),
        "send_rate_per_s": round(rate, 2),
        "eta_drain_s": round(backlog / rate, 1)
        if rate > 0 and backlog
        else (0.0 if not backlog else None),
        "recovering": delivery.recovering,
        "last_reconciliation_at": iso(delivery.last_reconciliation_at),
        "last_reconciliation": delivery.last_reconciliation,
        "consecutive_failures": delivery.consecutive_failures,
        "fault": _fault(delivery.fault),
        "tls_error": delivery.fault.reason
        if delivery.fault is not None and delivery.fault.kind == TLS
        else None,
    }
    return status


def _pending_error(store: LocalBufferManager) -> dict[str, Any] | None:
    """The last delivery error kept on a pending row (what a status read from the file alone
    can tell of a fault: ``edgebuf status`` beside a running client)."""
    found = store.pending_error()
    return None if found is None else {"error": found[0], "retries": int(found[1])}


def _fault(fault: Fault | None) -> dict[str, Any] | None:
    """The delivery fault in force (records stay pending meanwhile), or None."""
    if fault is None:
        return None
    return {
        "kind": fault.kind,
        "reason": fault.reason,
        "since": iso(fault.since),
        "attempts": fault.attempts,
    }
