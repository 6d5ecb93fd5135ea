"""BufferMonitor: status an operator can act on, stats as pandas DataFrames, repair.

Works with a running client (``client.monitor``) or on a buffer file alone (the CLI).
All figures are read from SQLite, except the live ones only a running client knows
(connectivity, send rate, last success / error).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebuf.store import salvage as repair
from edgebuf.config import GIB
from edgebuf.store.schema import SEQ_PREFIX
from edgebuf.store import LocalBufferManager, acquire_process_lock

if TYPE_CHECKING:
    import pandas as pd

    from edgebuf.client import EnhancedAsyncLoggingClient


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class StatsExport:
    """DataFrames from ``export_stats``: one row per buffered record, the backlog over
    time, and every record dropped without delivery (with its reason)."""

    records: pd.DataFrame
    backlog: pd.DataFrame
    dropped: pd.DataFrame
    files: list[str]


class BufferMonitor:
    """Reports on one buffer. Pass a store (or a path) and, optionally, its running client."""

    def __init__(
        self,
        store: LocalBufferManager | str | Path,
        *,
        client: EnhancedAsyncLoggingClient | None = None,
        capacity_bytes: int | None = None,
    ) -> None:
        if isinstance(store, LocalBufferManager):
            self._store, self._owns, self.path = store, False, store.path
        else:
            self._store, self._owns, self.path = None, True, Path(store)
        self.client = client
        if capacity_bytes is None:
            capacity_bytes = client.settings.capacity_bytes if client else GIB
        self.capacity_bytes = capacity_bytes

    @property
    def store(self) -> LocalBufferManager:
        """The buffer, opened on first use (so ``repair_db`` works on a file that won't open)."""
        if self._store is None:
            self._store = LocalBufferManager(self.path, exclusive=False)
        return self._store

    def close(self) -> None:
        if self._owns and self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> BufferMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ status
    def get_full_status(self) -> dict[str, Any]:
        """Counts by status, oldest pending age, size and capacity, free disk, connectivity,
        last success / error, send rate and estimated time to drain the backlog."""
        now = self.store.clock.time()
        counts = self.store.counts()
        meta = self.store.metadata()
        size = self.store.size_info()
        oldest = self.store.oldest_pending()
        disk = shutil.disk_usage(self.store.path.parent)
        live = int(meta.get("live_bytes", 0))
        with self.store.read_connection() as conn:
            dropped = dict(
                conn.execute("SELECT reason, count(*) FROM dropped_records GROUP BY reason")
            )
        backlog = counts["pending"] + counts["sending"]
        status: dict[str, Any] = {
            "device_id": self.client.device_id if self.client else None,
            "db_path": str(self.store.path),
            "generated_at": _iso(now),
            "counts": counts,
            "backlog": backlog,
            "oldest_pending_age_s": round(now - oldest[1], 3) if oldest else None,
            "oldest_pending_timestamp": _iso(oldest[0]) if oldest else None,
            "database": {
                "file_bytes": size["file_bytes"],
                "wal_bytes": size["wal_bytes"],
                "live_bytes": live,
                "capacity_bytes": self.capacity_bytes,
                "capacity_used_pct": round(100.0 * live / self.capacity_bytes, 2),
            },
            "disk": {"free_bytes": disk.free, "total_bytes": disk.total},
            "counters": {
                k: int(v)
                for k, v in meta.items()
                if not k.startswith(SEQ_PREFIX) and k != "last_cleanup"
            },
            "last_cleanup": _iso(meta.get("last_cleanup")),
            "sequences": {
                k[len(SEQ_PREFIX) :]: int(v) for k, v in meta.items() if k.startswith(SEQ_PREFIX)
            },
            "dropped_by_reason": dropped,
        }
        if self.client is None:
            status["connectivity"] = {"state": "not running"}
            status["delivery"] = {}
            return status
        conn_mon, stats = self.client.connectivity, self.client.sender.stats
        rate = stats.send_rate()
        status["connectivity"] = {
            "state": conn_mon.state,
            "endpoint": self.client.settings.endpoint,
            "last_probe_at": _iso(conn_mon.last_probe_at),
            "last_change_at": _iso(conn_mon.last_change_at),
        }
        status["delivery"] = {
            "last_success_at": _iso(stats.last_success),
            "last_error": stats.last_error,
            "last_error_at": _iso(stats.last_error_at),
            "send_rate_per_s": round(rate, 2),
            "eta_drain_s": round(backlog / rate, 1)
            if rate > 0 and backlog
            else (0.0 if not backlog else None),
            "recovering": self.client.recovery.active,
            "consecutive_failures": self.client.shipper.failures,
        }
        return status

    def print_status(self, file=None) -> None:
        """Print the full status in a form meant for a person at a terminal."""
        s = self.get_full_status()
        c, db, d = s["counts"], s["database"], s["disk"]
        lines = [
            f"edgebuf buffer  {s['db_path']}"
            + (f"  (device {s['device_id']})" if s["device_id"] else ""),
            f"  records     pending {c['pending']:,}  in flight {c['sending']:,}  "
            f"sent {c['sent']:,}  failed {c['failed']:,}",
            f"  oldest pending  {_age(s['oldest_pending_age_s'])}",
            f"  capacity    {db['live_bytes'] / 1e6:,.1f} MB of {db['capacity_bytes'] / 1e6:,.1f} MB"
            f" ({db['capacity_used_pct']}%), file {db['file_bytes'] / 1e6:,.1f} MB,"
            f" disk free {d['free_bytes'] / 1e9:,.1f} GB",
            f"  connectivity  {s['connectivity']['state']}",
        ]
        dl = s["delivery"]
        if dl:
            eta = dl["eta_drain_s"]
            lines.append(
                f"  delivery    {dl['send_rate_per_s']:,.1f} rec/s, drain ETA "
                f"{_age(eta) if eta is not None else 'unknown (nothing delivered lately)'}"
                f"{', recovering' if dl['recovering'] else ''}"
            )
            lines.append(f"  last success  {dl['last_success_at'] or 'never'}")
            if dl["last_error"]:
                lines.append(f"  last error    {dl['last_error_at']}  {dl['last_error']}")
        k = s["counters"]
        lines.append(
            f"  totals      buffered {k.get('total_buffered', 0):,}  sent {k.get('total_sent', 0):,}"
            f"  dead-lettered {k.get('total_failed', 0):,}  cleaned {k.get('total_cleaned', 0):,}"
            f"  evicted {k.get('evicted_capacity', 0):,}  rejected calls {k.get('rejected_full', 0):,}"
        )
        print("\n".join(lines), file=file)

    # ------------------------------------------------------------------ export
    def export_stats(
        self,
        out_dir: str | Path | None = None,
        fmt: str = "csv",
        *,
        freq: str | None = None,
        include_predictions: bool = False,
    ) -> StatsExport:
        """Per-record delivery facts, a backlog time series and dropped records, as DataFrames.

        Times are ``datetime64[ns, UTC]``; ``delivery_latency_s`` is sent_at - buffered_at.
        With ``out_dir``, also writes ``records``, ``backlog`` and ``dropped`` as CSV or
        Parquet (``fmt="parquet"`` needs pyarrow: ``pip install edgebuf[parquet]``).
        """
        import pandas as pd

        if fmt not in ("csv", "parquet"):
            raise ValueError("fmt must be 'csv' or 'parquet'")
        cols = (
            "id, record_id, device_id, seq, image_id, model_version, status, priority,"
            " retry_count, last_error, timestamp, buffered_at, sent_at"
            + (", prediction_data" if include_predictions else "")
        )
        with self.store.read_connection() as conn:
            records = pd.read_sql_query(f"SELECT {cols} FROM prediction_buffer ORDER BY id", conn)
            dropped = pd.read_sql_query("SELECT * FROM dropped_records ORDER BY id", conn)
        records["delivery_latency_s"] = records["sent_at"] - records["buffered_at"]
        for col in ("timestamp", "buffered_at", "sent_at"):
            records[col] = pd.to_datetime(records[col], unit="s", utc=True)
        for col in ("timestamp", "dropped_at"):
            dropped[col] = pd.to_datetime(dropped[col], unit="s", utc=True)
        backlog = backlog_series(records, dropped, freq=freq)
        files: list[str] = []
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            for name, frame in (("records", records), ("backlog", backlog), ("dropped", dropped)):
                target = out / f"{name}.{fmt}"
                if fmt == "csv":
                    frame.to_csv(target, index=(name == "backlog"))
                else:
                    frame.to_parquet(target, index=(name == "backlog"))
                files.append(str(target))
        return StatsExport(records, backlog, dropped, files)

    # ------------------------------------------------------------------ repair
    def repair_db(self) -> dict[str, Any]:
        """Check integrity; if damaged, keep the file aside, salvage every readable row
        into a fresh buffer and report counts. The client must not be running."""
        if self._owns and self._store is not None:
            self._store.close()
            self._store = None
        return repair_db(self.path)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def backlog_series(
    records: pd.DataFrame, dropped: pd.DataFrame, freq: str | None = None
) -> pd.DataFrame:
    """Backlog (buffered, not yet delivered or dropped) and records delivered, over time.

    Built from events: +1 backlog at ``buffered_at``; -1 backlog and +1 sent at
    ``sent_at``; -1 backlog at ``dropped_at``. Covers the rows still held (cleanup removes
    history older than the retention window).
    """
    import pandas as pd

    def events(times: pd.Series, backlog: int, sent: int) -> pd.DataFrame:
        times = times.dropna()
        return pd.DataFrame({"backlog": backlog, "sent_total": sent}, index=pd.DatetimeIndex(times))

    frame = pd.concat(
        [
            events(records["buffered_at"], 1, 0),
            events(records["sent_at"], -1, 1),
            events(dropped["dropped_at"], -1, 0),
        ]
    ).sort_index()
    frame.index.name = "time"
    if frame.empty:
        return frame.astype("int64")
    frame = frame.cumsum()
    if freq is None:
        span = (frame.index.max() - frame.index.min()).total_seconds()
        freq = f"{max(1, int(span / 200))}s"
    return frame.resample(freq).last().ffill().astype("int64")


def repair_db(db_path: str | Path) -> dict[str, Any]:
    """Integrity-check a buffer file and salvage it if damaged (see ``edgebuf.store.salvage``)."""
    ok, message = repair.check_integrity(db_path)
    if ok:
        return {"repaired": False, "integrity": message}
    fd = acquire_process_lock(db_path)  # no client may ship from a file being salvaged
    try:
        report = repair.salvage(db_path)
    finally:
        os.close(fd)
    report["integrity"] = message
    return report
