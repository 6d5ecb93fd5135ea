"""The queue of records: insert, claim, settle (sent / released / failed), requeue.

Every state change is one explicit transaction, so a crash at any instant leaves a state
that ``open`` can read back: rows claimed by a batch in flight (``sending``) return to
``pending`` on start-up, and the cloud de-duplicates the re-send by record id.
"""

from __future__ import annotations

import json
import json.encoder
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from edgebuf.errors import StorageError
from edgebuf.records import NewRecord
from edgebuf.store.connection import translate
from edgebuf.store.counters import Counters
from edgebuf.store.maintenance import Room
from edgebuf.store.schema import ROW_OVERHEAD

_encode_str = json.encoder.encode_basestring  # JSON string literal, non-ASCII kept as is

log = logging.getLogger("edgebuf.store")


def new_record_ids(n: int) -> list[str]:
    """``n`` random 128-bit ids as 32 hex characters (one urandom call for the lot)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


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


BeforeCommit: TypeAlias = Callable[[Room, Sequence[NewRecord], int], None]
"""The capacity hook ``add_predictions`` runs inside its transaction:
``before_commit(room, records, live_bytes_after)``; raising refuses the whole call."""

_INSERT_ROW = (
    "INSERT INTO prediction_buffer (record_id, device_id, seq, prediction_data, image_id,"
    " model_version, timestamp, buffered_at, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CLAIM_COLUMNS = "id, record_id, device_id, seq, image_id, timestamp, model_version, prediction_data, retry_count"


class Queue(Counters):
    """Records in and out of the buffer."""

    # Set by ``LocalBufferManager.__init__`` before the file opens; only an exclusive store
    # may remember what it wrote (no other process inserts).
    _last_seq: dict[str, int]  # device -> last sequence number committed
    _live_upper: int | None  # live_bytes is at most this (None: unknown)
    _orphaned: set[str]  # claims whose rows could not be released yet

    def reset_in_flight(self) -> int:
        """Return rows a crashed process left in flight to pending (start-up recovery)."""
        with self._storage_errors("return in-flight rows to pending"), self._tx() as conn:
            cur = conn.execute(
                "UPDATE prediction_buffer SET status='pending', claim_id=NULL WHERE status='sending'"
            )
        if cur.rowcount:
            log.warning("start-up: %d in-flight records returned to pending", cur.rowcount)
        return cur.rowcount

    def add_predictions(
        self,
        device_id: str,
        records: Sequence[NewRecord],
        *,
        before_commit: BeforeCommit | None = None,
        capacity_bytes: int | None = None,
    ) -> list[str]:
        """Commit ``records`` in one transaction; return their record ids.

        Each record gets a random 128-bit record id and the next sequence number of
        ``device_id``. When this returns, the rows are committed (WAL).

        ``before_commit(room, records, live_bytes)`` is the capacity policy's hook, called
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
            live_after: int | None = None
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
                    if before_commit is not None and not fits:  # (no hook: it always fits)
                        self._live_upper = None  # unknown until this commit lands
                        self.fold(conn)
                        before_commit(
                            Room(self, conn), records, self._folded(conn, "live_bytes") + added
                        )
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

    def add_prediction(
        self, device_id: str, record: NewRecord, *, before_commit: BeforeCommit | None = None
    ) -> str:
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

    def _settle(
        self,
        ids: Sequence[int],
        set_sql: str,
        params: tuple[object, ...],
        counter: str | None,
        claim_id: str | None,
    ) -> int:
        """Settle rows of one claim. Given ``claim_id``, only rows still ``sending`` under
        that claim change: a late answer can never settle rows a newer claim now holds."""
        if not ids:
            return 0
        where = "id IN (SELECT value FROM json_each(?)) AND status='sending'"
        args: tuple[object, ...] = (*params, json.dumps(list(ids)))
        if claim_id is not None:
            where += " AND claim_id = ?"
            args = (*args, claim_id)
        with self._storage_errors("update the batch"), self._tx() as conn:
            changed = conn.execute(
                f"UPDATE prediction_buffer SET {set_sql} WHERE {where}", args
            ).rowcount
            if counter and changed:
                conn.execute(
                    "UPDATE buffer_metadata SET value = value + ? WHERE key = ?", (changed, counter)
                )
        return changed

    def mark_sent(self, ids: Sequence[int], *, claim_id: str | None = None) -> int:
        """The cloud acknowledged these rows: ``sent`` with ``sent_at`` (one transaction)."""
        return self._settle(
            ids,
            "status='sent', sent_at=?, claim_id=NULL",
            (self.clock.time(),),
            "total_sent",
            claim_id,
        )

    def release(self, ids: Sequence[int], error: str, *, claim_id: str | None = None) -> int:
        """A retryable failure: back to ``pending``, ``retry_count`` + 1, ``last_error`` kept."""
        return self._settle(
            ids,
            "status='pending', claim_id=NULL, retry_count=retry_count+1, last_error=?",
            (error[:1000],),
            None,
            claim_id,
        )

    def mark_failed(self, ids: Sequence[int], error: str, *, claim_id: str | None = None) -> int:
        """The cloud refused these rows as invalid: dead letter (``failed``), kept and counted."""
        return self._settle(
            ids,
            "status='failed', claim_id=NULL, retry_count=retry_count+1, last_error=?",
            (error[:1000],),
            "total_failed",
            claim_id,
        )

    def release_claim(self, claim_id: str, error: str) -> int:
        """Return every row still in flight under ``claim_id`` to ``pending``. If the disk
        refuses even that, the claim is remembered and ``release_orphaned`` retries it (the
        shipping loop calls it every pass), so no row stays ``sending`` until a restart."""
        try:
            with self._storage_errors("release a batch"), self._tx() as conn:
                n = conn.execute(
                    "UPDATE prediction_buffer SET status='pending', claim_id=NULL,"
                    " retry_count=retry_count+1, last_error=? WHERE claim_id = ? AND status='sending'",
                    (error[:1000], claim_id),
                ).rowcount
        except StorageError as exc:
            log.warning("could not release batch %s now (%s); will retry", claim_id, exc)
            with self._lock:
                self._orphaned.add(claim_id)
            return 0
        with self._lock:
            self._orphaned.discard(claim_id)
        return n

    @property
    def has_orphaned(self) -> bool:
        """Whether a batch's rows could not be returned to pending yet (see ``release_claim``)."""
        return bool(self._orphaned)

    def release_orphaned(self) -> int:
        """Retry ``release_claim`` for every remembered claim; return rows released."""
        with self._lock:
            claims = list(self._orphaned)
        return sum(self.release_claim(c, "released after a failed settle") for c in claims)

    def requeue_failed(self, ids: Sequence[int] | None = None) -> int:
        """Put dead-lettered rows (all, or the given ids) back to ``pending``."""
        where = "status='failed'"
        params: tuple[object, ...] = ()
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

    def count_pending(self, at_most: int | None = None) -> int:
        """Pending rows; with ``at_most`` the count stops there (cheap on a huge backlog)."""
        with self._lock, self._storage_errors("count pending records"):
            params: tuple[object, ...] = ()
            if at_most is None:
                sql = "SELECT count(*) FROM prediction_buffer WHERE status='pending'"
            else:
                sql = (
                    "SELECT count(*) FROM (SELECT 1 FROM prediction_buffer"
                    " WHERE status='pending' LIMIT ?)"
                )
                params = (at_most,)
            return int(self._conn.execute(sql, params).fetchone()[0])

    def has_unsent(self) -> bool:
        """Whether any row is pending or in flight (an index probe, cheap on any backlog)."""
        with self._lock, self._storage_errors("check for unsent records"):
            return bool(
                self._conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM prediction_buffer WHERE status = 'pending')"
                    " OR EXISTS (SELECT 1 FROM prediction_buffer WHERE status = 'sending')"
                ).fetchone()[0]
            )
