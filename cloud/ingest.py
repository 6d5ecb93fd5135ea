"""The hot path: store one validated batch exactly once, all or nothing.

Exactly-once storage under at-least-once delivery rests on one statement: an atomic
`INSERT … ON CONFLICT (device_id, record_id, ts) DO NOTHING` (the timestamp is part of
the key because PostgreSQL partitions the table by day of it and SQLite orders its index
by it; a re-send carries the record's timestamp unchanged; see `cloud.statements` for how
each dialect receives the rows and learns which of them were new). The database, not
Python, decides what is new, so two replicas (or two threads) storing overlapping batches
at the same moment can never both store a record; there is no read-then-write window.

Detections per class are kept as running totals per (device, second of `timestamp`,
class), added in the same transaction and only for the records this transaction
inserted, so a retried batch never counts twice. A batch of 512 records from one device
spanning a few seconds becomes a few dozen upserts instead of one row per record and
class; `cloud.queries` sums the totals (exactly, also for time windows). The same goes
for the hour and minute rollups of the records and of the detections (`cloud.rollups`),
and for the device's seq state (`cloud.seqstate`): a watermark plus missing ranges,
advanced by the seqs this transaction acknowledged.

With `EDGEBUF_RETENTION_DAYS`, a record older than the retention window (below the cutoff,
`cloud.retention`) is acknowledged - counted in `accepted`, its seq held - but not stored,
and counted as expired; re-sending it is a duplicate.

Rows are inserted in record_id order, totals and rollups in key order, and the tables in
one order (records, totals, rollups, seq state), so concurrent transactions on
PostgreSQL take their locks in the same order and cannot deadlock. On
SQLite, batches that arrive together share one commit (see `BatchStore`).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from fastapi import HTTPException
from pydantic_core import PydanticSerializationError, to_json
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from cloud.db import Database
from cloud.errors import translate_db_errors
from cloud.retention import retention_cutoff
from cloud.rollups import detection_rollups, record_rollups
from cloud.seqstate import Entry, hold
from cloud.statements import Aggregates, writer_for
from cloud.wire import Batch, Record

__all__ = ["MAX_CLASS_NAME", "BatchStore", "StoreResult", "count_classes", "tally"]

MAX_CLASS_NAME = 256
_CLASS_KEYS = ("class_name", "class", "name")
_BY_RECORD_ID = itemgetter(0)


def _class_label(detection: object) -> str | None:
    """The class a detection counts under, or None (see `count_classes`)."""
    if not isinstance(detection, dict):
        return None
    name: Any = None
    for key in _CLASS_KEYS:
        name = detection.get(key)
        if name is not None:
            break
    if isinstance(name, str):
        text: str = name.replace("\x00", "")
        return text[:MAX_CLASS_NAME]
    if isinstance(name, int) and not isinstance(name, bool):
        return str(name)[:MAX_CLASS_NAME]
    return None


def count_classes(prediction: dict[str, Any]) -> dict[str, int]:
    """Count `prediction["detections"][*]` per class (`class_name`, else `class`/`name`).

    Integer class ids count under their decimal string. Anything unrecognisable is
    skipped: the record is still stored verbatim, it just adds nothing to the tally.
    """
    detections = prediction.get("detections")
    counts: dict[str, int] = {}
    if isinstance(detections, list):
        for detection in detections:
            label = _class_label(detection)
            if label is not None:
                counts[label] = counts.get(label, 0) + 1
    return counts


def tally(records: Iterable[Record]) -> list[tuple[float, str, int]]:
    """Detections per (second, class) of `records`, sorted: the rows to add to the totals.

    The second is floor(timestamp), exact for every finite double. Counts as
    `count_classes` does, with the common `{"class_name": "<text>"}` shape inline.
    """
    totals: dict[float, dict[str, int]] = {}
    for record in records:
        detections = record[5].get("detections")
        if not isinstance(detections, list) or not detections:
            continue
        bucket = float(math.floor(record[3]))
        counts = totals.get(bucket)
        if counts is None:
            counts = totals[bucket] = {}
        for detection in detections:
            # The common shape inline: {"class_name": "<short text>", ...}.
            if type(detection) is dict:
                label = detection.get("class_name")
                if type(label) is not str or len(label) > MAX_CLASS_NAME or "\x00" in label:
                    label = _class_label(detection)
            else:
                label = _class_label(detection)
            if label is not None:
                counts[label] = counts.get(label, 0) + 1
    return [
        (bucket, name, n)
        for bucket, counts in sorted(totals.items())
        for name, n in sorted(counts.items())
    ]


@dataclass(frozen=True)
class StoreResult:
    """Outcome of storing one batch."""

    accepted: int
    duplicates: int
    expired: int = 0  # of `accepted`: older than the retention window, held but not stored


def _not_storable(index: int, error: object) -> HTTPException:
    return HTTPException(
        422,
        [
            {
                "loc": ["body", "records", index, "prediction"],
                "msg": f"prediction is not storable as JSON: {error}",
                "type": "value_error",
            }
        ],
    )


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} (a number too large for a double)")


def _serialize(index: int, prediction: dict[str, Any]) -> str:
    """The slow, careful path of `BatchStore.store`'s per-record `to_json`.

    NaN/Infinity literals never get here (the route rejects them as malformed JSON),
    but a number too large for a double (1e999) parses as infinity, which the encoder
    would write as the non-JSON `Infinity`: refuse that rather than store it.
    """
    try:
        text = to_json(prediction)
    except (PydanticSerializationError, ValueError, RecursionError) as error:
        raise _not_storable(index, error) from None
    if b"Infinity" in text:  # maybe only inside a string: check strictly
        try:
            json.loads(text, parse_constant=_refuse_constant)
        except ValueError as error:
            raise _not_storable(index, error) from None
    return text.decode()


@dataclass(eq=False)
class _Job:
    """One batch waiting to be written, and, once `done`, how that went."""

    device_id: str
    rows: list[tuple[Any, ...]]
    unique: list[Record]
    aggregates: Aggregates
    received_at: float
    expired: list[Record]
    accepted: int = 0
    expired_accepted: int = 0
    error: BaseException | None = None
    done: bool = False


class BatchStore:
    """Insert batches into one database.

    On SQLite, where writes are serialized anyway, concurrent batches are group-committed:
    each request queues its batch and takes the write lock; whoever holds it writes every
    queued batch in one transaction (each under a savepoint of its own, so one batch's
    failure never touches another's records), commits once, and hands each request its own
    outcome. A request is still answered only after the COMMIT that holds its records;
    what is shared is the cost of the commit (WAL pages, locks). With one request at a time
    this is exactly the plain transaction per batch.
    """

    MAX_GROUP_BATCHES = 64
    MAX_GROUP_ROWS = 20_000

    def __init__(
        self,
        db: Database,
        retention_days: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._retention_days = retention_days
        self._clock = clock
        self._cutoff_floor: float | None = None  # what maintenance recorded (any replica)
        self._writer = writer_for(db.dialect)
        self._group_commit = db.is_sqlite
        self._queue: list[_Job] = []
        self._queue_lock = threading.Lock()

    def raise_cutoff(self, cutoff: float | None) -> None:
        """Treat everything below `cutoff` (the one maintenance recorded) as expired."""
        if cutoff is not None and (self._cutoff_floor is None or cutoff > self._cutoff_floor):
            self._cutoff_floor = cutoff

    def store(self, batch: Batch, received_at: float) -> StoreResult:
        """Store the batch's new records and add their class counts; all or nothing.

        Raises `ServiceUnavailable` (503) when the database cannot take it; the
        transaction is then rolled back, so a retry starts from a clean slate.
        """
        records = batch.records
        unique: list[Record] = sorted(records, key=_BY_RECORD_ID)  # stable: first one wins
        if len({record[0] for record in unique}) != len(unique):
            unique = [r for i, r in enumerate(unique) if i == 0 or r[0] != unique[i - 1][0]]
        device_id, batch_id = batch.device_id, batch.batch_id
        expired: list[Record] = []
        if self._retention_days is not None:
            # Late records older than the window: acknowledged (their seqs held), not stored.
            cutoff = retention_cutoff(self._clock(), self._retention_days)
            if self._cutoff_floor is not None and self._cutoff_floor > cutoff:
                cutoff = self._cutoff_floor  # a replica with a faster clock expired more
            if any(record[3] < cutoff for record in unique):
                expired = [record for record in unique if record[3] < cutoff]
                unique = [record for record in unique if record[3] >= cutoff]
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        for record in unique:
            # pydantic-core's encoder is ~3x faster than json.dumps and runs per record.
            try:
                text = to_json(record[5])
            except (PydanticSerializationError, ValueError, RecursionError):
                text = b"Infinity"  # take the careful path, which words the error
            prediction = (
                text.decode()
                if b"Infinity" not in text
                else _serialize(_index(records, record), record[5])
            )
            append(
                (
                    device_id,
                    record[0],
                    record[1],
                    record[2],
                    record[3],
                    record[4],
                    prediction,
                    received_at,
                    batch_id,
                )
            )
        # Counted outside the lock; redone for the new ones if some were stored before.
        job = _Job(
            device_id,
            rows,
            unique,
            _aggregates(unique, received_at, None if expired else _seq_run(unique)),
            received_at,
            expired,
        )

        with translate_db_errors():
            if self._group_commit:
                with self._queue_lock:
                    self._queue.append(job)
                with self._db.write_lock:
                    while not job.done:  # else another request wrote it meanwhile
                        self._write_queued()
                if job.error is not None:
                    raise job.error
            else:
                with self._db.engine.begin() as conn:
                    job.accepted = self._write(conn, job)
        if job.accepted:
            self._db.committed()
        return StoreResult(
            accepted=job.accepted,
            duplicates=len(records) - job.accepted,
            expired=job.expired_accepted,
        )

    def _write(self, conn: Connection, job: _Job) -> int:
        """The statements of one batch, inside the caller's transaction."""
        writer = self._writer
        accepted, new_ids, advanced = 0, None, False
        if job.rows:
            accepted, new_ids, advanced = writer.insert_records(conn, job.rows, job.aggregates)
        if new_ids is not None:  # some records were stored before: count only the rest
            new = [record for record in job.unique if record[0] in new_ids]
        elif accepted == len(job.rows):
            new = job.unique
        else:
            new = []
        if new_ids is not None and new:
            writer.add_aggregates(conn, job.device_id, _aggregates(new, job.received_at, None))
        job.expired_accepted = 0
        if not advanced and (new or job.expired):
            # The seq state after the aggregates: the order in which every transaction
            # takes its row locks (the insert statement's own fast path does the same).
            entries: list[Entry] = [(r[1], r[0], r[3], True) for r in new]
            entries += [(r[1], r[0], r[3], False) for r in job.expired]
            # On PostgreSQL the insert statement already tried the run (`cloud.statements`).
            run = (
                job.aggregates.seq_run
                if self._db.is_sqlite and new is job.unique and not job.expired
                else None
            )
            repeats = hold(conn, job.device_id, entries, run)
            job.expired_accepted = sum(1 for r in job.expired if r[0] not in repeats)
        return accepted + job.expired_accepted

    def _write_queued(self) -> None:
        """Write the oldest queued batches in one transaction (SQLite, write lock held)."""
        with self._queue_lock:
            group: list[_Job] = []
            rows = 0
            for job in self._queue:
                if group and (
                    len(group) >= self.MAX_GROUP_BATCHES
                    or rows + len(job.rows) > self.MAX_GROUP_ROWS
                ):
                    break
                group.append(job)
                rows += len(job.rows)
            del self._queue[: len(group)]
        try:
            with self._db.engine.begin() as conn:
                if len(group) == 1:
                    group[0].accepted = self._write(conn, group[0])
                else:
                    driver = conn.connection.driver_connection
                    for job in group:
                        driver.execute("SAVEPOINT edgebuf_batch")  # type: ignore[union-attr]
                        try:
                            job.accepted = self._write(conn, job)
                        except Exception as error:  # noqa: BLE001 - this batch alone fails
                            # If even this fails the transaction is unusable: all fail.
                            driver.execute("ROLLBACK TO edgebuf_batch")  # type: ignore[union-attr]
                            job.error = error
                        driver.execute("RELEASE edgebuf_batch")  # type: ignore[union-attr]
        except BaseException as error:
            if isinstance(error, sqlite3.Error):  # from a SAVEPOINT statement
                error = sa_exc.DBAPIError.instance(None, None, error, sqlite3.Error)
            for job in group:  # nothing of the group was committed
                job.accepted = 0
                if job.error is None:
                    job.error = error
            if not isinstance(error, Exception):
                raise
        finally:
            for job in group:
                job.done = True


def _seq_run(records: list[Record]) -> tuple[int, int] | None:
    """(lo, hi) when the records' seqs are exactly lo..hi, one record each, else None."""
    if not records:
        return None
    seqs = [record[1] for record in records]
    lo, hi = min(seqs), max(seqs)
    if hi - lo + 1 != len(seqs) or len(set(seqs)) != len(seqs):
        return None
    return lo, hi


def _aggregates(
    records: list[Record], received_at: float, run: tuple[int, int] | None
) -> Aggregates:
    totals = tally(records)
    return Aggregates(totals, detection_rollups(totals), record_rollups(records, received_at), run)


def _index(records: list[Record], record: Record) -> int:
    for index, candidate in enumerate(records):
        if candidate is record:
            return index
    return 0
