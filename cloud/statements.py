"""The statements of the hot path, written the fastest way for each dialect.

Both dialects insert records with the same atomic statement shape,

    INSERT INTO predictions … ON CONFLICT (device_id, record_id) DO NOTHING

and add the batch's detections per (second, class) to the running totals with

    INSERT INTO detection_counts … ON CONFLICT (device_id, bucket, class_name)
    DO UPDATE SET n = detection_counts.n + excluded.n

They differ in how a batch's rows reach the database:

* SQLite: the sqlite3 driver's own `executemany` of row tuples, past SQLAlchemy's
  parameter processing (which cost more CPU than SQLite's insert itself). sqlite3 keeps
  the one prepared statement and rebinds it per row. Its `rowcount` is the number of rows
  inserted; only when that is neither all nor none does a second statement fetch which
  records were new (the ids of the rows this transaction inserted, which SQLite assigns
  as max(id)+1 onwards, under the write lock).
* PostgreSQL: one `INSERT … SELECT … FROM unnest(%b::text[], %b::int8[], …)
  ORDER BY record_id … RETURNING record_id`, i.e. one array parameter per column (the
  device, batch and receive time as scalars), in psycopg's binary format. The SQL text is
  the same for every batch size, so it is parsed and planned once per connection instead
  of once per batch (a 32-row multi-VALUES statement has 288 placeholders that psycopg
  re-parses each time). The totals ride in the same statement (a data-modifying CTE)
  and are applied only if every record was new, so the usual batch costs one round trip.
  `ORDER BY` fixes the order in which rows take their locks (see `cloud.ingest`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

__all__ = ["COUNT_COLUMNS", "RECORD_COLUMNS", "RecordWriter", "writer_for"]

RECORD_COLUMNS = ("device_id", "record_id", "seq", "image_id", "ts", "model_version",
                  "prediction", "received_at", "batch_id")
COUNT_COLUMNS = ("device_id", "bucket", "class_name", "n")

Inserted = tuple[int, "set[str] | None"]


class RecordWriter(Protocol):
    """Write a batch inside the caller's transaction."""

    def insert_records(self, conn: Connection, rows: list[tuple[Any, ...]],
                       totals: list[tuple[float, str, int]]) -> Inserted:
        """Insert-or-ignore `rows` (tuples in `RECORD_COLUMNS` order, one device).

        If every row was new, also add `totals` (the detections of all the rows, see
        `add_counts`). Return how many rows were inserted and, only when that is some but
        not all of them, the record_ids of the inserted ones (else None); the caller then
        adds the totals of just those.
        """
        ...

    def add_counts(self, conn: Connection, device_id: str,
                   totals: list[tuple[float, str, int]]) -> None:
        """Add (bucket, class_name, n) rows, unique and sorted, to the device's totals."""
        ...


class SqliteWriter:
    """Tuples straight to the sqlite3 driver's executemany."""

    _INSERT = (
        f"INSERT INTO predictions ({', '.join(RECORD_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
        " ON CONFLICT (device_id, record_id) DO NOTHING"
    )
    _NEW = "SELECT record_id FROM predictions WHERE id > ?"
    _ADD = (
        f"INSERT INTO detection_counts ({', '.join(COUNT_COLUMNS)}) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id, bucket, class_name) DO UPDATE SET n = n + excluded.n"
    )

    @staticmethod
    def _driver(conn: Connection) -> sqlite3.Connection:
        return conn.connection.driver_connection  # type: ignore[return-value]

    @staticmethod
    def _wrap(statement: str, error: sqlite3.Error) -> sa_exc.DBAPIError:
        # The same exception SQLAlchemy would have raised, so translate_db_errors and
        # the 503 handlers see what they always see.
        return sa_exc.DBAPIError.instance(statement, None, error, sqlite3.Error)

    def insert_records(self, conn: Connection, rows: list[tuple[Any, ...]],
                       totals: list[tuple[float, str, int]]) -> Inserted:
        driver = self._driver(conn)
        statement = self._INSERT
        try:
            accepted = driver.executemany(statement, rows).rowcount
            if accepted == len(rows) and totals:
                statement = self._ADD
                driver.executemany(statement, [(rows[0][0], *total) for total in totals])
            if not 0 < accepted < len(rows):
                return accepted, None
            statement = self._NEW
            (last,) = driver.execute("SELECT last_insert_rowid()").fetchone()
            cursor = driver.execute(statement, (last - accepted,))
            new_ids = {row[0] for row in cursor}
        except sqlite3.Error as error:
            raise self._wrap(statement, error) from error
        return accepted, new_ids

    def add_counts(self, conn: Connection, device_id: str,
                   totals: list[tuple[float, str, int]]) -> None:
        try:
            self._driver(conn).executemany(
                self._ADD, [(device_id, bucket, name, n) for bucket, name, n in totals]
            )
        except sqlite3.Error as error:
            raise self._wrap(self._ADD, error) from error


class PostgresWriter:
    """Column arrays through `unnest()`, as binary parameters of the psycopg driver.

    One constant statement per batch (parsed and planned once per connection: psycopg
    prepares it). The arrays go in psycopg's binary format: in text format every
    element is quoted and its quotes escaped by a regex, which for JSON predictions cost
    ~30 µs per record, more than everything else; binary costs ~0.5 µs. SQLAlchemy has
    no switch for that, hence the driver's cursor.
    """

    # One statement, one round trip: the records, and the totals only if every record
    # was new (the common case; otherwise the caller adds the new records' own totals).
    # It answers how many rows were inserted and, only if not all, which.
    _INSERT = (
        "WITH ins AS ("
        f" INSERT INTO predictions ({', '.join(RECORD_COLUMNS)})"
        " SELECT %b, src.record_id, src.seq, src.image_id, src.ts, src.model_version,"
        " src.prediction, %b, %b"
        " FROM unnest(%b::text[], %b::int8[], %b::text[], %b::float8[], %b::text[],"
        " %b::text[]) AS src(record_id, seq, image_id, ts, model_version, prediction)"
        " ORDER BY src.record_id"
        " ON CONFLICT (device_id, record_id) DO NOTHING RETURNING record_id"
        "), added AS ("
        f" INSERT INTO detection_counts ({', '.join(COUNT_COLUMNS)})"
        " SELECT %b, t.bucket, t.class_name, t.n"
        " FROM unnest(%b::float8[], %b::text[], %b::int8[]) AS t(bucket, class_name, n)"
        " WHERE (SELECT count(*) FROM ins) = %b::int8"
        " ORDER BY t.bucket, t.class_name"
        " ON CONFLICT (device_id, bucket, class_name)"
        " DO UPDATE SET n = detection_counts.n + excluded.n"
        ")"
        " SELECT count(*), CASE WHEN count(*) BETWEEN 1 AND %b::int8 - 1"
        " THEN array_agg(record_id) END FROM ins"
    )
    _ADD = (
        f"INSERT INTO detection_counts ({', '.join(COUNT_COLUMNS)})"
        " SELECT %b, src.bucket, src.class_name, src.n"
        " FROM unnest(%b::float8[], %b::text[], %b::int8[]) AS src(bucket, class_name, n)"
        " ORDER BY src.bucket, src.class_name"
        " ON CONFLICT (device_id, bucket, class_name)"
        " DO UPDATE SET n = detection_counts.n + excluded.n"
    )

    @staticmethod
    def _execute(conn: Connection, statement: str, params: Sequence[Any]) -> list[Any]:
        import psycopg

        driver = conn.connection.driver_connection
        try:
            with driver.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute(statement, params, binary=True)
                return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as error:
            # What SQLAlchemy would raise, so translate_db_errors sees what it always
            # sees; a dead connection is rolled back, found dead and discarded by it.
            raise sa_exc.DBAPIError.instance(
                statement, None, error, psycopg.Error, dialect=conn.dialect,
                connection_invalidated=conn.dialect.is_disconnect(error, driver, None),
            ) from error

    def insert_records(self, conn: Connection, rows: list[tuple[Any, ...]],
                       totals: list[tuple[float, str, int]]) -> Inserted:
        first, n = rows[0], len(rows)
        _, record_ids, seqs, image_ids, stamps, versions, texts, _, _ = zip(*rows)
        buckets, names, counts = map(list, zip(*totals)) if totals else ([], [], [])
        [(accepted, new_ids)] = self._execute(conn, self._INSERT, (
            first[0], first[7], first[8], list(record_ids), list(seqs), list(image_ids),
            list(stamps), list(versions), list(texts),
            first[0], buckets, names, counts, n, n,
        ))
        return accepted, (set(new_ids) if new_ids is not None else None)

    def add_counts(self, conn: Connection, device_id: str,
                   totals: list[tuple[float, str, int]]) -> None:
        buckets, names, counts = zip(*totals)
        self._execute(conn, self._ADD, (device_id, list(buckets), list(names), list(counts)))


def writer_for(dialect: str) -> RecordWriter:
    """Return the writer for a SQLAlchemy dialect name ('sqlite' or 'postgresql')."""
    if dialect == "sqlite":
        return SqliteWriter()
    if dialect == "postgresql":
        return PostgresWriter()
    raise ValueError(f"no writer for dialect {dialect!r}")
