"""Status reads and maintenance: counts, sizes, named deletes (which keep the counters exact
through ``Counters.delete_rows``), integrity check, WAL checkpoints, incremental vacuum."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from edgebuf.errors import BufferCorruptError
from edgebuf.store.counters import Counters
from edgebuf.store.schema import ROW_OVERHEAD, Row, Status

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
            row = self._conn.execute(
                "SELECT timestamp, buffered_at FROM prediction_buffer WHERE status='pending'"
                " ORDER BY id LIMIT 1"
            ).fetchone()
        return None if row is None else (float(row[0]), float(row[1]))

    def pending_error(self, scan: int = 10_000) -> tuple[str, int] | None:
        """(last_error, retry_count) of the newest pending row that was tried and failed,
        among the newest ``scan`` pending rows; None if none. Why records wait, read from
        the file alone (``edgebuf status`` while the client runs in another process)."""
        with self._lock, self._storage_errors("read the last delivery error"):
            row = self._conn.execute(
                "SELECT last_error, retry_count FROM (SELECT last_error, retry_count"
                " FROM prediction_buffer WHERE status='pending' ORDER BY id DESC LIMIT ?)"
                " WHERE last_error IS NOT NULL LIMIT 1",
                (scan,),
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction for code inside this package (salvage) and for tests; the layers
        above use the named methods."""
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
            busy, log_frames, checkpointed = self._conn.execute(
                f"PRAGMA wal_checkpoint({mode})"
            ).fetchone()
        return int(busy), int(log_frames), int(checkpointed)

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

    # ------------------------------------------------------------------ named reads for the layers above
    def dropped_by_reason(self) -> dict[str, int]:
        """Records removed without delivery, counted by reason (the audit rows plus the
        older ones folded into ``dropped_summary``)."""
        with self._lock, self._storage_errors("read the dropped records"):
            return {
                reason: int(n)
                for reason, n in self._conn.execute(
                    "SELECT reason, sum(n) FROM (SELECT reason, count(*) AS n FROM"
                    " dropped_records GROUP BY reason UNION ALL SELECT reason, records"
                    " FROM dropped_summary) GROUP BY reason ORDER BY reason"
                )
            }

    def record_ids(self, status: str) -> list[str]:
        """Record ids of every row in ``status`` (drills and audits count with these)."""
        with self._lock, self._storage_errors("read record ids"):
            return [
                r
                for (r,) in self._conn.execute(
                    "SELECT record_id FROM prediction_buffer WHERE status = ? ORDER BY id",
                    (status,),
                )
            ]

    def first_dropped_at(self) -> float | None:
        """Wall time of the first record dropped without delivery, or None."""
        with self._lock, self._storage_errors("read the dropped records"):
            first = self._conn.execute(
                "SELECT min(t) FROM (SELECT min(dropped_at) AS t FROM dropped_records"
                " UNION ALL SELECT min(first_dropped_at) FROM dropped_summary)"
            ).fetchone()[0]
        return None if first is None else float(first)

    def export_rows(
        self, *, include_predictions: bool = False
    ) -> tuple[tuple[list[str], list[Row]], ...]:
        """(columns, rows) of every buffered record, of the dropped records' audit rows and
        of ``dropped_summary``, read on a separate connection (one WAL snapshot) so an
        export never blocks logging."""
        cols = (
            "id, record_id, device_id, seq, image_id, model_version, status, priority,"
            " retry_count, last_error, timestamp, buffered_at, sent_at"
            + (", prediction_data" if include_predictions else "")
        )
        with self._storage_errors("export the buffer"), self.read_connection() as conn:
            conn.execute("BEGIN")
            cur = conn.execute(f"SELECT {cols} FROM prediction_buffer ORDER BY id")
            records = ([d[0] for d in cur.description], cur.fetchall())
            cur = conn.execute("SELECT * FROM dropped_records ORDER BY id")
            dropped = ([d[0] for d in cur.description], cur.fetchall())
            cur = conn.execute("SELECT * FROM dropped_summary ORDER BY device_id, reason")
            summary = ([d[0] for d in cur.description], cur.fetchall())
            conn.execute("COMMIT")
        return records, dropped, summary

    # ------------------------------------------------------------------ named writes for capacity
    def delete_sent(
        self, *, sent_before: float | None, limit: int, confirmed: bool | None = None
    ) -> int:
        """One short transaction deleting up to ``limit`` of the oldest sent rows: only those
        sent before ``sent_before`` when given, only those the cloud confirmed holding (or
        only those it has not) when ``confirmed`` is given; counters stay exact."""
        extra, params = ("AND sent_at < ?", (sent_before,)) if sent_before is not None else ("", ())
        if confirmed is not None:
            extra += " AND confirmed_at IS NOT NULL" if confirmed else " AND confirmed_at IS NULL"
        with self.transaction() as conn:
            return self.delete_rows(
                conn,
                "id IN (SELECT id FROM prediction_buffer WHERE status='sent'"
                f" {extra} ORDER BY id LIMIT {int(limit)})",
                params,
                "total_cleaned",
            )

    def set_last_cleanup(self, when: float) -> None:
        """Record the wall time of a cleanup run."""
        with self.transaction() as conn:
            conn.execute("UPDATE buffer_metadata SET value = ? WHERE key = 'last_cleanup'", (when,))

    def count_rejected_call(self) -> None:
        """Count one log call refused with ``BufferFullError`` (``rejected_full``)."""
        with self.transaction() as conn:
            conn.execute("UPDATE buffer_metadata SET value = value + 1 WHERE key = 'rejected_full'")

    def limit_pages(self, pages: int | None) -> None:
        """Cap the file at ``pages`` pages (None: its current size), or lift the cap with
        a huge number: a real SQLITE_FULL on demand, for simulations and tests."""
        with self._lock, self._storage_errors("limit the database size"):
            if pages is None:
                pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
            self._conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchall()

    def check_writable(self) -> None:
        """Raise a ``StorageError`` unless a write transaction can commit now (readiness)."""
        with self.transaction() as conn:
            conn.execute("UPDATE buffer_metadata SET value = value WHERE 0")


class Room:
    """What the capacity policy may do inside an insert's transaction, before the rows land:
    read the exact byte count, delete sent rows, evict pending ones (audited by reason)."""

    def __init__(self, store: Counters, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    def live_bytes(self) -> int:
        """Bytes held in records, exact (the counters are folded before the hook runs)."""
        return int(
            self._conn.execute(
                "SELECT value FROM buffer_metadata WHERE key = 'live_bytes'"
            ).fetchone()[0]
        )

    def evict(
        self, status: str, target: int, *, reason: str | None, audit_rows: int = 100_000
    ) -> int:
        """Delete ``status`` rows until ``target`` bytes are freed; return bytes freed.

        Sent rows go confirmed first, oldest first, and cost nothing (counted as cleaned).
        Pending rows go lowest priority, then oldest, first, each written to
        ``dropped_records`` with ``reason`` and counted in ``evicted_<reason>``; before they
        are, audit rows beyond the newest ``audit_rows`` fold into ``dropped_summary``."""
        if status not in (Status.SENT.value, Status.PENDING.value):
            raise ValueError(f"cannot evict {status!r} rows")
        # Delivered rows the cloud confirmed holding go before those it has not confirmed.
        order = "confirmed_at IS NULL, id" if status == Status.SENT.value else "priority, id"
        chosen: list[int] = []
        freed = 0
        for row_id, length in self._conn.execute(
            f"SELECT id, length(prediction_data) FROM prediction_buffer WHERE status = ?"
            f" ORDER BY {order}",
            (status,),
        ):
            if freed >= target:
                break
            chosen.append(row_id)
            freed += length + ROW_OVERHEAD
        if not chosen:
            return 0
        id_list = ",".join(str(i) for i in chosen)  # integers read from SQLite itself
        if reason is None:
            self._store.delete_rows(self._conn, f"id IN ({id_list})", (), "total_cleaned")
            return freed
        # Older audit rows fold first, so this eviction's own rows are always listed (until
        # a later eviction folds them): a reader that looks after each commit sees them all.
        fold_dropped(self._conn, audit_rows)
        self._conn.execute(
            "INSERT INTO dropped_records (record_id, device_id, seq, image_id, priority,"
            " timestamp, reason, dropped_at) SELECT record_id, device_id, seq, image_id,"
            f" priority, timestamp, ?, ? FROM prediction_buffer WHERE id IN ({id_list})",
            (reason, self._store.clock.time()),
        )
        self._store.delete_rows(self._conn, f"id IN ({id_list})", (), f"evicted_{reason}")
        return freed


def fold_dropped(conn: sqlite3.Connection, keep: int) -> None:
    """Fold every audit row but the newest ``keep`` into ``dropped_summary`` (inside the
    caller's transaction: the counts and sequence ranges stay exact)."""
    edge = conn.execute(
        "SELECT id FROM dropped_records ORDER BY id DESC LIMIT 1 OFFSET ?", (keep,)
    ).fetchone()
    if edge is None:
        return
    conn.execute(
        "INSERT INTO dropped_summary (device_id, reason, records, seq_min, seq_max,"
        " timestamp_min, timestamp_max, first_dropped_at, last_dropped_at)"
        " SELECT device_id, reason, count(*), min(seq), max(seq), min(timestamp),"
        " max(timestamp), min(dropped_at), max(dropped_at) FROM dropped_records"
        " WHERE id <= ? GROUP BY device_id, reason"
        " ON CONFLICT (device_id, reason) DO UPDATE SET"
        " records = records + excluded.records,"
        " seq_min = min(seq_min, excluded.seq_min), seq_max = max(seq_max, excluded.seq_max),"
        " timestamp_min = min(timestamp_min, excluded.timestamp_min),"
        " timestamp_max = max(timestamp_max, excluded.timestamp_max),"
        " first_dropped_at = min(first_dropped_at, excluded.first_dropped_at),"
        " last_dropped_at = max(last_dropped_at, excluded.last_dropped_at)",
        (edge[0],),
    )
    conn.execute("DELETE FROM dropped_records WHERE id <= ?", (edge[0],))
