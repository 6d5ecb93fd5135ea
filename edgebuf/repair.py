"""Integrity check and salvage of a damaged buffer file.

A damaged buffer is never deleted: it is moved aside (with its WAL, whose committed
frames may hold the newest records), every readable row is copied into a fresh buffer,
and the report says what was saved and what could not be. Rows that were in flight come
back as ``pending``; the cloud de-duplicates anything that had in fact arrived.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgebuf.schema import ROW_OVERHEAD, SEQ_PREFIX

log = logging.getLogger("edgebuf.repair")

WINDOW = 500
_ROW_COLUMNS = (
    "id, record_id, device_id, seq, prediction_data, image_id, model_version, timestamp,"
    " buffered_at, sent_at, status, retry_count, last_error, priority"
)


def check_integrity(db_path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Run ``PRAGMA quick_check``; return (ok, message). A missing file counts as ok."""
    path = Path(db_path)
    if not path.exists():
        return True, "no buffer file yet"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            conn.execute("SELECT count(*) FROM prediction_buffer").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return False, str(exc)
    message = "; ".join(r[0] for r in rows[:5])
    return message == "ok", message


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 0
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, aside)
    wal = Path(f"{path}-wal")
    if wal.exists():
        os.replace(wal, Path(f"{aside}-wal"))  # keep committed frames with their database
    with contextlib.suppress(FileNotFoundError):
        os.remove(f"{path}-shm")  # shared-memory index: rebuilt from the WAL
    return aside


def _read_rows(src: sqlite3.Connection, upper: int) -> tuple[list[tuple], int]:
    """Read every row that can be read, window by window; return (rows, unreadable)."""
    rows: list[tuple] = []
    unreadable = 0
    cursor = 0
    empty_windows = 0
    while cursor < upper or empty_windows == 0:
        try:
            got = src.execute(
                f"SELECT {_ROW_COLUMNS} FROM prediction_buffer WHERE id > ? AND id <= ?"
                " ORDER BY id",
                (cursor, cursor + WINDOW),
            ).fetchall()
        except sqlite3.Error:
            got = []
            for rid in range(cursor + 1, cursor + WINDOW + 1):
                try:
                    row = src.execute(
                        f"SELECT {_ROW_COLUMNS} FROM prediction_buffer WHERE id = ?", (rid,)
                    ).fetchone()
                except sqlite3.Error:
                    unreadable += 1
                    continue
                if row is not None:
                    got.append(row)
        rows.extend(got)
        empty_windows = 0 if got else empty_windows + 1
        cursor += WINDOW
        if cursor >= upper and empty_windows:
            break
    return rows, unreadable


def _safe(src: sqlite3.Connection, sql: str) -> list[tuple]:
    try:
        return src.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def salvage(db_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Move a damaged buffer aside and copy every readable row into a fresh one."""
    from edgebuf.store import LocalBufferManager  # the fresh buffer gets the current schema

    path = Path(db_path)
    aside = _move_aside(path)
    report: dict[str, Any] = {"repaired": True, "damaged_copy": str(aside)}
    try:
        src = sqlite3.connect(aside)
        src.execute("PRAGMA query_only=1")
        meta = dict(_safe(src, "SELECT key, value FROM buffer_metadata"))
        max_id = _safe(src, "SELECT max(id) FROM prediction_buffer")
        upper = int(max(meta.get("total_buffered", 0), (max_id[0][0] or 0) if max_id else 0))
        rows, unreadable = _read_rows(src, upper)
        dropped = _safe(
            src,
            "SELECT record_id, device_id, seq, image_id, priority, timestamp, reason, dropped_at"
            " FROM dropped_records",
        )
        src.close()
    except sqlite3.Error as exc:  # not a database at all
        meta, rows, unreadable, dropped = {}, [], 0, []
        report["error"] = str(exc)
    with LocalBufferManager(path, exclusive=False) as fresh, fresh.transaction() as conn:
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
        unreadable_rows=unreadable,
        expected_rows=expected,
        missing_rows=None if expected is None else max(0, expected - len(rows)),
    )
    log.warning("repaired %s: %s", path, report)
    return report
