"""Counters folded in after the commit: exact at every instant, crash or not.

The hot path commits the row alone (one page of table, one of index). Counters
(``total_buffered``, ``live_bytes``) and per-device sequence high-water marks are folded in
later, by ``fold``: every row with an id above ``counted_through`` is not yet in them. Every
delete folds first, so a row is never removed before it is counted; readers add the
unfolded rows (``effective_metadata``), so every count is exact at every instant.
"""

from __future__ import annotations

import logging
import sqlite3

from edgebuf.store.connection import StoreConnection
from edgebuf.store.schema import COUNTED_THROUGH, ROW_OVERHEAD, SEQ_PREFIX

log = logging.getLogger("edgebuf.store")


def effective_metadata(conn: sqlite3.Connection) -> dict[str, float]:
    """Counters and sequence positions of a buffer, exact, from any connection: the
    folded values plus the rows above ``counted_through`` (see ``LocalBufferManager.fold``).

    Both reads see one snapshot, so a fold or delete committed by the writer in between
    cannot count a row twice or not at all."""
    if conn.in_transaction:
        return _effective_metadata(conn)
    conn.execute("BEGIN")  # deferred: a read snapshot (WAL), no write lock
    try:
        return _effective_metadata(conn)
    finally:
        conn.execute("COMMIT")


def _effective_metadata(conn: sqlite3.Connection) -> dict[str, float]:
    meta = dict(conn.execute("SELECT key, value FROM buffer_metadata").fetchall())
    through = meta.pop(COUNTED_THROUGH, None)
    if through is None:  # a schema-1 buffer opened read-only: every row is counted
        return meta
    for device, count, top, chars, _ in unfolded_rows(conn, int(through)):
        meta["total_buffered"] = meta.get("total_buffered", 0) + count
        meta["live_bytes"] = meta.get("live_bytes", 0) + chars + count * ROW_OVERHEAD
        key = SEQ_PREFIX + device
        meta[key] = max(meta.get(key, 0), top)
    return meta


def unfolded_rows(
    conn: sqlite3.Connection, through: int, limit: int | None = None
) -> list[tuple[str, int, int, int, int]]:
    """[(device, rows, max seq, JSON chars, max id)] of the rows above ``through`` (ids up to
    ``through + limit`` when given), the rows ``fold`` has not yet counted. Ids above the
    mark have no holes (a delete folds everything first), so a range of ids is a prefix."""
    upper = -1 if limit is None else through + limit
    return conn.execute(
        "SELECT device_id, count(*), max(seq), coalesce(sum(length(prediction_data)), 0),"
        " max(id) FROM prediction_buffer WHERE id > ? AND (? < 0 OR id <= ?)"
        " GROUP BY device_id",
        (through, upper, upper),
    ).fetchall()


class Counters(StoreConnection):
    """Folding and reading the counters of one buffer."""

    @staticmethod
    def _folded(conn: sqlite3.Connection, key: str) -> int:
        return int(
            conn.execute("SELECT value FROM buffer_metadata WHERE key = ?", (key,)).fetchone()[0]
        )

    def fold_in_steps(self, step: int = 2048) -> int:
        """Fold everything, ``step`` rows per transaction, releasing the writer lock in
        between: at ~1 µs a row, a logging call waits at most a couple of ms behind it."""
        total = 0
        while True:
            n = self.fold(limit=step)
            total += n
            if n < step:  # caught up; and rows past a hole in the ids (a raw delete), if any
                return total + self.fold()

    def _high_water_seq(self, conn: sqlite3.Connection, device_id: str) -> int:
        through = self._folded(conn, COUNTED_THROUGH)
        return int(
            conn.execute(
                "SELECT max(coalesce((SELECT value FROM buffer_metadata WHERE key = ?), 0),"
                " coalesce((SELECT max(seq) FROM prediction_buffer WHERE id > ?"
                " AND device_id = ?), 0))",
                (SEQ_PREFIX + device_id, through, device_id),
            ).fetchone()[0]
        )

    def fold(self, conn: sqlite3.Connection | None = None, *, limit: int | None = None) -> int:
        """Add rows inserted since the last fold to the counters; return how many.

        Inside a transaction when ``conn`` is given, else in one of its own. ``limit`` folds
        at most the next ``limit`` row ids, so one transaction (which holds the writer lock
        that ``log_prediction`` waits for) stays short; see ``fold_in_steps``."""
        if conn is None:
            with self._storage_errors("update the counters"), self._tx() as own:
                return self.fold(own, limit=limit)
        rows = unfolded_rows(conn, self._folded(conn, COUNTED_THROUGH), limit)
        if not rows:
            return 0
        count = sum(r[1] for r in rows)
        chars = sum(r[3] for r in rows)
        conn.execute(
            "UPDATE buffer_metadata SET value = CASE key WHEN 'live_bytes' THEN value + ?"
            " WHEN 'total_buffered' THEN value + ? ELSE ? END"
            " WHERE key IN ('live_bytes', 'total_buffered', ?)",
            (chars + count * ROW_OVERHEAD, count, max(r[4] for r in rows), COUNTED_THROUGH),
        )
        conn.executemany(
            "INSERT INTO buffer_metadata (key, value) VALUES (?, ?) ON CONFLICT(key)"
            " DO UPDATE SET value = max(value, excluded.value)",
            [(SEQ_PREFIX + device, top) for device, _, top, _, _ in rows],
        )
        return count

    def delete_rows(
        self, conn: sqlite3.Connection, where: str, params: tuple[object, ...], counter: str
    ) -> int:
        """Inside a transaction: delete rows matching ``where``, keep ``live_bytes`` and
        ``counter`` exact in the same transaction; return how many were deleted."""
        self.fold(conn)  # a row is counted before it can be removed
        lengths = conn.execute(
            f"DELETE FROM prediction_buffer WHERE {where} RETURNING length(prediction_data)",
            params,
        ).fetchall()
        n = len(lengths)
        if n:
            freed = sum(length for (length,) in lengths) + n * ROW_OVERHEAD
            # Every row left is counted; the next rowid SQLite hands out (max + 1) must be
            # above the mark even when the newest rows were the ones deleted.
            conn.execute(
                "UPDATE buffer_metadata SET value = CASE key WHEN 'live_bytes' THEN value - ?"
                " WHEN ? THEN (SELECT coalesce(max(id), 0) FROM prediction_buffer)"
                " ELSE value + ? END WHERE key IN ('live_bytes', ?, ?)",
                (freed, COUNTED_THROUGH, n, COUNTED_THROUGH, counter),
            )
        return n

    def metadata(self) -> dict[str, float]:
        """The counters and per-device sequence positions, exact: the folded values in
        ``buffer_metadata`` plus the rows inserted since the last ``fold``."""
        with self._lock, self._storage_errors("read metadata"):
            return effective_metadata(self._conn)

    def _before_close(self) -> None:
        if self._exclusive:  # leave the counters on disk exact; readers need not add
            try:
                self.fold()
            except Exception as exc:  # a full disk must not stop the close
                log.warning("could not fold the counters at close: %s", exc)
