"""LocalBufferManager: the SQLite buffer, the single source of truth of the edge.

Every state change is one explicit transaction, so a crash at any instant leaves a state
that ``open`` can read back: rows claimed by a batch in flight (``sending``) return to
``pending`` on start-up, and the cloud de-duplicates the re-send by record id.

Concurrency: one connection, guarded by one lock, does every write (SQLite allows one
writer at a time anyway; a Python lock avoids SQLITE_BUSY spins). Long work (cleanup,
eviction) is cut into short transactions so ``log_prediction`` never waits long.
Readers that scan (export, status) open their own connection and see a WAL snapshot.

A ``log_prediction`` commit writes the row alone (a table page and an index page): the
counters and sequence marks in ``buffer_metadata`` catch up in ``fold`` (every second on
the shipping thread, before any delete, at close), and readers add the rows not yet
folded (``effective_metadata``), so every count is exact at every instant, crash or not.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import json.encoder
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgebuf.clock import Clock, SystemClock
from edgebuf.errors import (
    BufferCorruptError,
    ConfigError,
    DiskFullError,
    StorageError,
)
from edgebuf.records import NewRecord
from edgebuf.schema import (
    COUNTED_THROUGH,
    COUNTERS,
    CREATE_STATEMENTS,
    ROW_OVERHEAD,
    SCHEMA_VERSION,
    SEQ_PREFIX,
    Status,
)

log = logging.getLogger("edgebuf.store")
_encode_str = json.encoder.encode_basestring  # JSON string literal, non-ASCII kept as is

_CORRUPT_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def translate(exc: sqlite3.Error, doing: str) -> StorageError:
    """Turn a raw sqlite3 error into an edgebuf error that says what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if primary == sqlite3.SQLITE_FULL:
        return DiskFullError(
            f"cannot {doing}: the disk holding the buffer is full ({exc}). Nothing of this "
            "call was stored and nothing buffered was lost; logging resumes when space is freed."
        )
    if primary in _CORRUPT_CODES:
        return BufferCorruptError(
            f"cannot {doing}: the buffer file is damaged ({exc}); run `edgebuf repair`"
        )
    return StorageError(f"cannot {doing}: {exc}")


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


def new_record_ids(n: int) -> list[str]:
    """``n`` random 128-bit ids as 32 hex characters (one urandom call for the lot)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def acquire_process_lock(db_path: str | os.PathLike[str]) -> int:
    """Take the advisory lock ``<db>.lock`` (released when the fd closes or the process dies)."""
    fd = os.open(f"{db_path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(
            f"the buffer {db_path} is in use by another edgebuf process; one client per buffer"
        ) from None
    return fd


def _json_str(value: str | None) -> str:
    return "null" if value is None else _encode_str(value)


@dataclass(frozen=True, slots=True)
class BufferedRecord:
    """A row claimed for sending, in the shape the cloud's ``POST /log`` takes."""

    id: int
    record_id: str
    device_id: str
    seq: int
    image_id: str | None
    timestamp: float
    model_version: str | None
    prediction_json: str
    retry_count: int

    def wire_json(self) -> str:
        """This record as a JSON object of the wire format (prediction embedded verbatim)."""
        return (
            f'{{"record_id":"{self.record_id}","seq":{self.seq},'
            f'"image_id":{_json_str(self.image_id)},"timestamp":{self.timestamp!r},'
            f'"model_version":{_json_str(self.model_version)},'
            f'"prediction":{self.prediction_json}}}'
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows claimed together; ``claim_id`` marks them in the database while in flight."""

    claim_id: str
    records: tuple[BufferedRecord, ...]

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)


_INSERT_ROW = (
    "INSERT INTO prediction_buffer (record_id, device_id, seq, prediction_data, image_id,"
    " model_version, timestamp, buffered_at, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CLAIM_COLUMNS = "id, record_id, device_id, seq, image_id, timestamp, model_version, prediction_data, retry_count"


class LocalBufferManager:
    """The durable prediction buffer in one SQLite file.

    ``exclusive=True`` (what the client uses) takes an advisory lock on ``<db>.lock`` so two
    processes never ship from one buffer; it also resets rows left ``sending`` by a crash.
    Tools that only read or make short edits (CLI status, cleanup) pass ``exclusive=False``.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        clock: Clock | None = None,
        exclusive: bool = True,
    ) -> None:
        self.path = Path(db_path)
        self.clock = clock or SystemClock()
        self.durability = durability
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._ckpt_conn: sqlite3.Connection | None = None
        self._commits = 0  # a hint for the checkpoint timer, not data
        self._commits_at_checkpoint = 0
        self._closed = False
        # Only an exclusive store may remember what it wrote: no other process inserts.
        self._exclusive = exclusive
        self._last_seq: dict[str, int] = {}  # device -> last sequence number committed
        self._live_upper: int | None = None  # live_bytes is at most this (None: unknown)
        self._prepare_path()
        if exclusive:
            self._take_process_lock()
        try:
            self._conn = self._connect()
            self._create_schema()
            if exclusive:
                self.recovered_in_flight = self.reset_in_flight()
            else:
                self.recovered_in_flight = 0
        except sqlite3.Error as exc:
            self._release_process_lock()
            raise translate(exc, f"open the buffer {self.path}") from exc
        except BaseException:
            self._release_process_lock()
            raise

    # ------------------------------------------------------------------ opening
    def _prepare_path(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not self.path.exists():
                # Owner-only: predictions can be sensitive production data.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            if not os.access(self.path, os.R_OK | os.W_OK) or not os.access(
                self.path.parent, os.W_OK
            ):
                raise PermissionError(f"{self.path} (or its folder) is not writable")
        except OSError as exc:
            raise ConfigError(f"db_path {str(self.path)!r} cannot be used: {exc}") from None

    def _take_process_lock(self) -> None:
        self._lock_fd = acquire_process_lock(self.path)

    def _release_process_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA busy_timeout=30000")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only effective before tables exist
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"could not switch {self.path} to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        return conn

    def _create_schema(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} has schema version {version}, newer than this edgebuf "
                    f"({SCHEMA_VERSION}); upgrade edgebuf"
                )
            for stmt in CREATE_STATEMENTS:
                conn.execute(stmt)
            conn.executemany(
                "INSERT OR IGNORE INTO buffer_metadata (key, value) VALUES (?, 0)",
                [(name,) for name in COUNTERS],
            )
            # Schema 1 counted every row in the commit that inserted it: all are folded.
            conn.execute(
                "INSERT OR IGNORE INTO buffer_metadata (key, value)"
                " SELECT ?, coalesce(max(id), 0) FROM prediction_buffer",
                (COUNTED_THROUGH,),
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def reset_in_flight(self) -> int:
        """Return rows a crashed process left in flight to pending (start-up recovery)."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE prediction_buffer SET status='pending', claim_id=NULL WHERE status='sending'"
            )
        if cur.rowcount:
            log.warning("start-up: %d in-flight records returned to pending", cur.rowcount)
        return cur.rowcount

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the writer lock; rolled back on any error."""
        with self._lock:
            if self._closed:
                raise StorageError("the buffer is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                    self._commits += 1
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise

    @contextlib.contextmanager
    def _storage_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, doing) from exc

    def read_connection(self) -> sqlite3.Connection:
        """A separate read-only connection for scans (export, status) that must not block writes."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def close(self) -> None:
        """Close the connection and release the process lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._exclusive:  # leave the counters on disk exact; readers need not add
                with contextlib.suppress(StorageError):
                    self.fold()
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
            if self._ckpt_conn is not None:
                self._ckpt_conn.close()
            self._conn.close()
        self._release_process_lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> LocalBufferManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing records
    def add_predictions(
        self,
        device_id: str,
        records: Sequence[NewRecord],
        *,
        before_commit=None,
        capacity_bytes: int | None = None,
    ) -> list[str]:
        """Commit ``records`` in one transaction; return their record ids.

        Each record gets a random 128-bit record id and the next sequence number of
        ``device_id``. When this returns, the rows are committed (WAL).

        ``before_commit(conn, records, live_bytes)`` is the capacity policy's hook, called
        inside the transaction before the rows are inserted, with the buffer's exact byte
        count as it will be with them. Given ``capacity_bytes``, it is called only when the
        rows might not fit: an exclusive store knows an upper bound of ``live_bytes`` (only
        it inserts), so the common commit is the INSERT alone. The counters are not written
        by this commit; ``fold`` adds the rows to them later (see ``metadata``).
        """
        if not records:
            return []
        now = self.clock.time()
        n = len(records)
        ids = new_record_ids(n)
        added = sum(len(r.prediction_json) for r in records) + n * ROW_OVERHEAD
        with self._lock:  # the remembered sequence and bound change with the commit, atomically
            last_seq = self._last_seq.get(device_id) if self._exclusive else None
            upper = self._live_upper if self._exclusive else None
            fits = before_commit is None or (
                capacity_bytes is not None and upper is not None and upper + added <= capacity_bytes
            )
            live_after = None
            if n == 1 and last_seq is not None and fits:
                # The common call: nothing to read first, so the INSERT is the transaction.
                if self._closed:
                    raise StorageError("the buffer is closed")
                text, image_id, timestamp, model_version, priority = records[0]
                row = (ids[0], device_id, last_seq + 1, text, image_id, model_version,
                       timestamp, now, priority)  # fmt: skip
                try:
                    self._conn.execute(_INSERT_ROW, row)
                except sqlite3.Error as exc:
                    raise translate(exc, "store the prediction") from exc
                self._commits += 1
            else:
                with self._storage_errors("store the prediction"), self._tx() as conn:
                    if last_seq is None:
                        last_seq = self._high_water_seq(conn, device_id)
                    if not fits:
                        self._live_upper = None  # unknown until this commit lands
                        self.fold(conn)
                        before_commit(conn, records, self._folded(conn, "live_bytes") + added)
                        live_after = self._folded(conn, "live_bytes") + added
                    first = last_seq + 1
                    rows = [
                        (rid, device_id, seq, text, image_id, model_version, ts, now, priority)
                        for rid, seq, (text, image_id, ts, model_version, priority) in zip(
                            ids, range(first, first + n), records
                        )
                    ]
                    conn.executemany(_INSERT_ROW, rows)
            # Committed: advance what this store remembers.
            self._last_seq[device_id] = last_seq + n
            if live_after is not None:
                self._live_upper = live_after
            elif self._live_upper is not None:
                self._live_upper += added
        return ids

    # ------------------------------------------------------------------ counters
    # The hot path commits the row alone (one page of table, one of index). Counters and
    # sequence high-water marks are folded in later, by ``fold``: every row with an id
    # above ``counted_through`` is not yet in them. Every delete folds first, so a row is
    # never removed before it is counted; readers add the unfolded rows (``metadata``).
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

    def add_prediction(self, device_id: str, record: NewRecord, *, before_commit=None) -> str:
        """Commit one record; return its record id."""
        return self.add_predictions(device_id, [record], before_commit=before_commit)[0]

    # ------------------------------------------------------------------ batches
    def claim(self, limit: int, *, newest_first: bool = False) -> Batch | None:
        """Mark up to ``limit`` pending rows as ``sending`` and return them, or None.

        Oldest-first is the backlog (recovery) lane; newest-first is the live lane, so
        fresh predictions are not stuck behind hours of backlog.
        """
        claim_id = new_record_ids(1)[0]
        order = "DESC" if newest_first else "ASC"
        with self._storage_errors("claim a batch"), self._tx() as conn:
            rows = conn.execute(
                f"UPDATE prediction_buffer SET status='sending', claim_id=?"
                f" WHERE id IN (SELECT id FROM prediction_buffer WHERE status='pending'"
                f" ORDER BY id {order} LIMIT ?)"
                f" RETURNING {_CLAIM_COLUMNS}",
                (claim_id, limit),
            ).fetchall()
        if not rows:
            return None
        rows.sort(key=lambda r: r[0])
        return Batch(claim_id, tuple(BufferedRecord(*r) for r in rows))

    def _settle(self, ids: Sequence[int], set_sql: str, params: tuple, counter: str | None) -> int:
        if not ids:
            return 0
        with self._storage_errors("update the batch"), self._tx() as conn:
            cur = conn.execute(
                f"UPDATE prediction_buffer SET {set_sql}"
                " WHERE id IN (SELECT value FROM json_each(?)) AND status='sending'",
                (*params, json.dumps(list(ids))),
            )
            changed = cur.rowcount
            if counter and changed:
                conn.execute(
                    "UPDATE buffer_metadata SET value = value + ? WHERE key = ?", (changed, counter)
                )
        return changed

    def mark_sent(self, ids: Sequence[int]) -> int:
        """The cloud acknowledged these rows: ``sent`` with ``sent_at`` (one transaction)."""
        return self._settle(
            ids, "status='sent', sent_at=?, claim_id=NULL", (self.clock.time(),), "total_sent"
        )

    def release(self, ids: Sequence[int], error: str) -> int:
        """A retryable failure: back to ``pending``, ``retry_count`` + 1, ``last_error`` kept."""
        return self._settle(
            ids,
            "status='pending', claim_id=NULL, retry_count=retry_count+1, last_error=?",
            (error[:1000],),
            None,
        )

    def mark_failed(self, ids: Sequence[int], error: str) -> int:
        """The cloud refused these rows as invalid: dead letter (``failed``), kept and counted."""
        return self._settle(
            ids,
            "status='failed', claim_id=NULL, retry_count=retry_count+1, last_error=?",
            (error[:1000],),
            "total_failed",
        )

    def requeue_failed(self, ids: Sequence[int] | None = None) -> int:
        """Put dead-lettered rows (all, or the given ids) back to ``pending``."""
        where = "status='failed'"
        params: tuple = ()
        if ids is not None:
            where += " AND id IN (SELECT value FROM json_each(?))"
            params = (json.dumps(list(ids)),)
        with self._storage_errors("requeue failed records"), self._tx() as conn:
            changed = conn.execute(
                f"UPDATE prediction_buffer SET status='pending', retry_count=0 WHERE {where}",
                params,
            ).rowcount
            conn.execute(
                "UPDATE buffer_metadata SET value = value + ? WHERE key = 'total_requeued'",
                (changed,),
            )
        return changed

    # ------------------------------------------------------------------ reading
    def count_pending(self, at_most: int | None = None) -> int:
        """Pending rows; with ``at_most`` the count stops there (cheap on a huge backlog)."""
        with self._lock, self._storage_errors("count pending records"):
            if at_most is None:
                sql, params = "SELECT count(*) FROM prediction_buffer WHERE status='pending'", ()
            else:
                sql = (
                    "SELECT count(*) FROM (SELECT 1 FROM prediction_buffer"
                    " WHERE status='pending' LIMIT ?)"
                )
                params = (at_most,)
            return self._conn.execute(sql, params).fetchone()[0]

    def has_unsent(self) -> bool:
        """Whether any row is pending or in flight (an index probe, cheap on any backlog)."""
        with self._lock, self._storage_errors("check for unsent records"):
            return bool(
                self._conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM prediction_buffer WHERE status = 'pending')"
                    " OR EXISTS (SELECT 1 FROM prediction_buffer WHERE status = 'sending')"
                ).fetchone()[0]
            )

    def counts(self) -> dict[str, int]:
        """Row counts by status (every status present, zero when empty)."""
        with self._lock, self._storage_errors("count records"):
            rows = self._conn.execute(
                "SELECT status, count(*) FROM prediction_buffer GROUP BY status"
            ).fetchall()
        out = {s.value: 0 for s in Status}
        out.update(dict(rows))
        return out

    def metadata(self) -> dict[str, float]:
        """The counters and per-device sequence positions, exact: the folded values in
        ``buffer_metadata`` plus the rows inserted since the last ``fold``."""
        with self._lock, self._storage_errors("read metadata"):
            return effective_metadata(self._conn)

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
