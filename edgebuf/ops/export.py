"""``export_stats``: the buffer as pandas DataFrames (records, backlog over time, dropped),
optionally written as CSV or Parquet. pandas is imported here only, on first use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgebuf.store import LocalBufferManager

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class StatsExport:
    """DataFrames from ``export_stats``: one row per buffered record, the backlog over
    time, and every record dropped without delivery (with its reason)."""

    records: pd.DataFrame
    backlog: pd.DataFrame
    dropped: pd.DataFrame
    files: list[str]
    # Evictions older than the audit rows in ``dropped``, per device and reason: how many,
    # their sequence and time ranges (``dropped`` plus this count every eviction).
    dropped_summary: pd.DataFrame | None = None


def export_stats(
    store: LocalBufferManager,
    out_dir: str | Path | None = None,
    fmt: str = "csv",
    *,
    freq: str | None = None,
    include_predictions: bool = False,
) -> StatsExport:
    """Per-record delivery facts, a backlog time series and dropped records, as DataFrames.

    ``dropped`` holds the audit rows the buffer keeps (the newest ``audit_rows`` of its
    capacity); older evictions are counted by device and reason in ``dropped_summary``.
    Times are ``datetime64[ns, UTC]``; ``delivery_latency_s`` is sent_at - buffered_at.
    With ``out_dir``, also writes ``records``, ``backlog``, ``dropped`` and
    ``dropped_summary`` as CSV or
    Parquet (``fmt="parquet"`` needs pyarrow: ``pip install edgebuf[parquet]``).
    """
    import pandas as pd

    if fmt not in ("csv", "parquet"):
        raise ValueError("fmt must be 'csv' or 'parquet'")
    (rcols, rrows), (dcols, drows), (scols, srows) = store.export_rows(
        include_predictions=include_predictions
    )
    summary = pd.DataFrame.from_records(srows, columns=scols)
    for col in ("timestamp_min", "timestamp_max", "first_dropped_at", "last_dropped_at"):
        summary[col] = pd.to_datetime(
            pd.to_numeric(summary[col]).astype("float64"), unit="s", utc=True
        )
    records = pd.DataFrame.from_records(rrows, columns=rcols)
    dropped = pd.DataFrame.from_records(drows, columns=dcols)
    for frame in (records, dropped):  # epoch seconds, NULL as NaN (as read_sql_query gave)
        for col in ("timestamp", "buffered_at", "sent_at", "dropped_at"):
            if col in frame:
                frame[col] = pd.to_numeric(frame[col]).astype("float64")
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
        frames = (("records", records), ("backlog", backlog), ("dropped", dropped),
                  ("dropped_summary", summary))  # fmt: skip
        for name, frame in frames:
            target = out / f"{name}.{fmt}"
            if fmt == "csv":
                frame.to_csv(target, index=(name == "backlog"))
            else:
                frame.to_parquet(target, index=(name == "backlog"))
            files.append(str(target))
    return StatsExport(records, backlog, dropped, files, summary)


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
