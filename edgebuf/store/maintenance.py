"""Status reads and maintenance: counts, sizes, deletes that keep the counters exact,
integrity check, WAL checkpoints, incremental vacuum."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from edgebuf.errors import BufferCorruptError
from edgebuf.store.counters import Counters
from edgebuf.store.schema import COUNTED_THROUGH, ROW_OVERHEAD, Status

log = logging.getLogger("edgebuf.store")


class Maintenance(Counters):
    """What cleanup, capacity, status and the disk-full procedure ask of the buffer."""

    def counts(self) -> dict[str, int]:
        """Row counts by status (every status present, zero when empty)."""
        with self._lock, self._storage_errors("count records"):
            rows = self._conn.execute(
                "SELECT status, count(*) FROM prediction_buffer GROUP BY status"
            ).fetchall()
        out = {s.value: 0 for s in Status}
        out.update(dict(rows))
        return out

    def oldest_pending(self) -> tuple[float, float] | None:
        """(timestamp, buffered_at) of the oldest pending row, or None."""
        with self._lock, self._storage_errors("read the oldest pending record"):
            return self._conn.execute(
                "SELECT timestamp, buffered_at FROM prediction_buffer WHERE status='pending'"
                " ORDER BY id LIMIT 1"
            ).fetchone()

    def size_info(self) -> dict[str, int]:
        """File size and live (non-free) bytes of the main database file, and the WAL size."""
        with self._lock, self._storage_errors("read the database size"):
            page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        wal = Path(f"{self.path}-wal")
        return {
            "file_bytes": pages * page_size,
            "used_bytes": (pages - free) * page_size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "page_size": page_size,
        }

    def delete_rows(self, conn: sqlite3.Connection, where: str, params: tuple, counter: str) -> int:
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

    def execute_write(self, sql: str, params: tuple = ()) -> int:
        """Run one write statement in its own transaction (for maintenance code); rowcount."""
        with self._storage_errors("update the buffer"), self._tx() as conn:
            return conn.execute(sql, params).rowcount

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction for maintenance code in this package (cleanup, eviction)."""
        with self._storage_errors("update the buffer"), self._tx() as conn:
            yield conn

    def verify(self) -> None:
        """``PRAGMA quick_check``: raise BufferCorruptError if any page is damaged.

        O(size of the file); the client runs it once at start-up so damage is found and
        repaired before a write lands on it, not hours later."""
        with self._lock, self._storage_errors("check the buffer"):
            rows = self._conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            raise BufferCorruptError(
                f"{self.path} failed its integrity check ({rows[0][0]}); run `edgebuf repair`"
            )

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run a WAL checkpoint (``PASSIVE``, ``RESTART`` or ``TRUNCATE``)."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(mode)
        with self._lock, self._storage_errors("checkpoint the WAL"):
            return self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()

    def set_autocheckpoint(self, pages: int) -> None:
        """WAL size (pages) at which a COMMIT runs SQLite's own checkpoint."""
        with self._lock, self._storage_errors("configure the WAL"):
            self._conn.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def needs_checkpoint(self) -> bool:
        """Whether anything was committed since the last background checkpoint."""
        return self._commits != self._commits_at_checkpoint

    def checkpoint_in_background(self) -> None:
        """A PASSIVE checkpoint on a side connection, without the writer lock.

        Called by the shipping thread after acknowledgements: it folds the WAL into the
        database while nobody waits for it, so ``log_prediction`` rarely pays for
        SQLite's automatic checkpoint, and the WAL holds few pages that are not yet in
        the database - which is what lets deletes proceed on a full disk."""
        if self._closed:
            return
        if self._ckpt_conn is None:
            self._ckpt_conn = sqlite3.connect(self.path, check_same_thread=False, timeout=0.1)
        commits = self._commits
        try:
            busy, frames, done = self._ckpt_conn.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        except sqlite3.Error as exc:
            log.debug("background checkpoint skipped: %s", exc)
            return
        if not busy and frames == done:
            self._commits_at_checkpoint = commits

    def incremental_vacuum(self, pages: int = 0) -> None:
        """Hand free pages back to the filesystem (all of them when ``pages`` is 0)."""
        with self._lock, self._storage_errors("reclaim space"):
            # executescript steps the pragma to completion; execute() frees a single page.
            self._conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
