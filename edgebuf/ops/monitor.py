"""BufferMonitor: status an operator can act on, stats as pandas DataFrames, repair.

Works with a running client (``client.monitor``) or on a buffer file alone (the CLI).
All figures are read from SQLite, except the live ones only a running client knows
(connectivity, send rate, last success / error).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from edgebuf.config import GIB
from edgebuf.ops.export import StatsExport, backlog_series, export_stats
from edgebuf.status import buffer_status
from edgebuf.store import LocalBufferManager
from edgebuf.store.repair import repair_db

if TYPE_CHECKING:
    from edgebuf.client import EnhancedAsyncLoggingClient

__all__ = ["BufferMonitor", "StatsExport", "backlog_series", "repair_db"]


class BufferMonitor:
    """Reports on one buffer. Pass a store (or a path) and, optionally, its running client."""

    def __init__(
        self,
        store: LocalBufferManager | str | Path,
        *,
        client: EnhancedAsyncLoggingClient | None = None,
        capacity_bytes: int | None = None,
    ) -> None:
        self._store: LocalBufferManager | None
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
        return buffer_status(
            self.store,
            capacity_bytes=self.capacity_bytes,
            device_id=self.client.device_id if self.client else None,
            delivery=self.client.delivery_state() if self.client else None,
        )

    def print_status(self, file: IO[str] | None = None) -> None:
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
            if dl.get("fault"):
                f = dl["fault"]
                lines.append(
                    f"  FAULT         {f['kind']} since {f['since']} ({f['attempts']} attempts,"
                    f" records kept pending): {f['reason']}"
                )
            if dl["last_error"]:
                lines.append(f"  last error    {dl['last_error_at']}  {dl['last_error']}")
        held = s.get("pending_error")
        if held and not (dl and dl.get("fault")):
            lines.append(
                f"  held by     {held['error']} (a pending record retried {held['retries']}x)"
            )
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
        """Per-record delivery facts, a backlog time series and dropped records, as DataFrames
        (see ``edgebuf.ops.export.export_stats``)."""
        return export_stats(
            self.store, out_dir, fmt, freq=freq, include_predictions=include_predictions
        )

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
