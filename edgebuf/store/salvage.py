"""Integrity check and salvage of a damaged buffer file.

Reads a damaged buffer (a copy kept aside by ``edgebuf.store.repair``, with its WAL, whose
committed frames may hold the newest records) window by window and copies every readable,
valid row into a fresh buffer; the report says what was saved and what could not be. Rows
that were in flight come back as ``pending``; the cloud de-duplicates anything that had in
fact arrived.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from edgebuf.store.counters import effective_metadata
from edgebuf.store.files import fsync_path
from edgebuf.store.schema import COUNTED_THROUGH, ROW_OVERHEAD, SEQ_PREFIX, Row

log = logging.getLogger("edgebuf.store.salvage")

WINDOW = 500
_ROW_COLUMNS = (
    "id, record_id, device_id, seq, prediction_data, image_id, model_version, timestamp,"
    " buffered_at, sent_at, status, retry_count, last_error, priority"
)


def _read_window(src: sqlite3.Connection, cursor: int) -> tuple[list[Row], int]:
    """Rows with ids in (cursor, cursor + WINDOW]; a damaged range is read id by id."""
    try:
        return src.execute(
            f"SELECT {_ROW_COLUMNS} FROM prediction_buffer WHERE id > ? AND id <= ? ORDER BY id",
            (cursor, cursor + WINDOW),
        ).fetchall(), 0
    except sqlite3.Error:
        pass
    got, errors = [], 0
    for rid in range(cursor + 1, cursor + WINDOW + 1):
        try:
            row = src.execute(
                f"SELECT {_ROW_COLUMNS} FROM prediction_buffer WHERE id = ?", (rid,)
            ).fetchone()
        except sqlite3.Error:
            errors += 1
            continue
        if row is not None:
            got.append(row)
    return got, errors


_STATUSES = {"pending", "sending", "sent", "failed"}


def _valid(row: Row) -> bool:
    """A salvaged row must be whole: damaged pages can yield rows with missing fields."""
    rid, rec_id, device, seq, data, image, model, ts, buffered, sent, status = row[:11]
    if not (isinstance(rid, int) and isinstance(rec_id, str) and len(rec_id) == 32):
        return False
    if not (isinstance(device, str) and device and isinstance(seq, int) and seq > 0):
        return False
    if not (isinstance(ts, float) and isinstance(buffered, float) and status in _STATUSES):
        return False
    if not (image is None or isinstance(image, str)) or not (
        model is None or isinstance(model, str)
    ):
        return False
    if not isinstance(data, (str, bytes)):
        return False
    try:
        return isinstance(json.loads(data), dict)
    except ValueError:
        return False


def _read_rows(src: sqlite3.Connection, upper: int) -> tuple[list[Row], int]:
    """Read every row that can be read; return (rows, ids whose lookup failed).

    ``upper`` is the highest id known to have existed (0 if unknown); past it the scan
    stops after one window without rows or errors, or after 20 windows without rows."""
    rows: list[Row] = []
    unreadable = 0
    cursor = quiet = rowless = 0
    while True:
        got, errors = _read_window(src, cursor)
        whole = [r for r in got if _valid(r)]
        rows.extend(whole)
        unreadable += errors + len(got) - len(whole)
        cursor += WINDOW
        quiet = 0 if (got or errors) else quiet + 1
        rowless = 0 if got else rowless + 1
        if cursor >= upper and (quiet >= 1 or rowless >= 20):
            return rows, unreadable


def _pad_to_header_size(path: Path) -> None:
    """A truncated file is unreadable even where its pages survive: SQLite refuses it
    when the header promises more pages. Pad the (working copy) with zeros to that size."""
    with open(path, "r+b") as f:
        header = f.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return
        page_size = int.from_bytes(header[16:18], "big") or 65536
        if page_size == 1:
            page_size = 65536
        declared = int.from_bytes(header[28:32], "big") * page_size
        f.seek(0, os.SEEK_END)
        if 0 < f.tell() < declared:
            f.truncate(declared)


_SUMMARY_COLUMNS = (
    "device_id, reason, records, seq_min, seq_max, timestamp_min, timestamp_max,"
    " first_dropped_at, last_dropped_at"
)


def _safe(src: sqlite3.Connection, sql: str) -> list[Row]:
    try:
        return src.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def salvage_into(aside: Path, target: Path) -> dict[str, Any]:
    """Copy every readable row of the damaged file ``aside`` (with its WAL) into a fresh
    buffer at ``target``, complete and synced to disk when this returns. ``aside`` is only
    read (through a scratch copy), so this can be run again after a crash."""
    from edgebuf.store.manager import LocalBufferManager  # the fresh buffer gets the current schema

    for stale in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    report: dict[str, Any] = {"repaired": True, "damaged_copy": str(aside)}
    work = Path(f"{aside}.work")  # the aside copy stays exactly as it was found
    shutil.copyfile(aside, work)
    if Path(f"{aside}-wal").exists():
        shutil.copyfile(f"{aside}-wal", f"{work}-wal")
    else:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{work}-wal").unlink()
    _pad_to_header_size(work)
    try:
        src = sqlite3.connect(work)
        src.execute("PRAGMA query_only=1")
        try:  # exact counters need the rows above counted_through; they may be unreadable
            meta = effective_metadata(src)
        except sqlite3.Error:
            meta = {
                key: float(value)
                for key, value in _safe(src, "SELECT key, value FROM buffer_metadata")
                if isinstance(key, str) and isinstance(value, (int, float))
            }
            meta.pop(COUNTED_THROUGH, None)
        max_id = _safe(src, "SELECT max(id) FROM prediction_buffer")
        upper = int(max(meta.get("total_buffered", 0), (max_id[0][0] or 0) if max_id else 0))
        rows, unreadable = _read_rows(src, upper)
        dropped = _safe(
            src,
            "SELECT record_id, device_id, seq, image_id, priority, timestamp, reason, dropped_at"
            " FROM dropped_records",
        )
        summary = _safe(src, f"SELECT {_SUMMARY_COLUMNS} FROM dropped_summary")
        src.close()
    except sqlite3.Error as exc:  # not a database at all
        meta, rows, unreadable, dropped, summary = {}, [], 0, [], []
        report["error"] = str(exc)
    finally:
        for leftover in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    fresh = LocalBufferManager(target, exclusive=False, durability="full")
    with fresh, fresh.transaction() as conn:
        conn.executemany(
            f"INSERT INTO prediction_buffer ({_ROW_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [r[:10] + ("pending" if r[10] == "sending" else r[10],) + r[11:] for r in rows],
        )
        conn.executemany(
            "INSERT INTO dropped_records (record_id, device_id, seq, image_id, priority,"
            " timestamp, reason, dropped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            dropped,
        )
        conn.executemany(
            f"INSERT INTO dropped_summary ({_SUMMARY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            summary,
        )
        # Counters carry over where readable; sequences never go backwards.
        for key, value in meta.items():
            conn.execute(
                "INSERT INTO buffer_metadata (key, value) VALUES (?, ?) ON CONFLICT(key)"
                " DO UPDATE SET value = excluded.value",
                (key, value),
            )
        for device, top in conn.execute(
            "SELECT device_id, max(seq) FROM prediction_buffer GROUP BY device_id"
        ).fetchall():
            conn.execute(
                "INSERT INTO buffer_metadata (key, value) VALUES (?, ?) ON CONFLICT(key)"
                " DO UPDATE SET value = max(value, excluded.value)",
                (SEQ_PREFIX + device, top),
            )
        live = conn.execute(
            "SELECT coalesce(sum(length(prediction_data)), 0) + count(*) * ?"
            " FROM prediction_buffer",
            (ROW_OVERHEAD,),
        ).fetchone()[0]
        conn.execute("UPDATE buffer_metadata SET value = ? WHERE key = 'live_bytes'", (live,))
        # Counters, sequences and live_bytes above account for every salvaged row.
        conn.execute(
            "UPDATE buffer_metadata SET value = (SELECT coalesce(max(id), 0)"
            " FROM prediction_buffer) WHERE key = ?",
            (COUNTED_THROUGH,),
        )
        by_status = dict(
            conn.execute("SELECT status, count(*) FROM prediction_buffer GROUP BY status")
        )
    expected = None
    if meta:
        expected = int(
            meta.get("total_buffered", 0)
            - meta.get("total_cleaned", 0)
            - meta.get("evicted_capacity", 0)
        )
    report.update(
        salvaged=len(rows),
        by_status=by_status,
        unreadable_ids=unreadable,
        expected_rows=expected,
        missing_rows=None if expected is None else max(0, expected - len(rows)),
    )
    # The last connection closed: SQLite checkpointed the WAL into the file and removed it.
    fsync_path(target)
    return report
