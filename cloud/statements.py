"""The statements of the hot path, written the fastest way for each dialect.

Both dialects insert records with the same atomic statement shape,

    INSERT INTO predictions … ON CONFLICT (<idempotency key>) DO NOTHING

(the key is (device_id, record_id, ts) on both: PostgreSQL partitions the table by ts,
and SQLite's index of it, ordered (device_id, ts, record_id), stays time-local), and add
the batch's aggregates (`Aggregates`: the detections per (second, class) and their hour
and minute sums, the record rollups) to the running totals with upserts such as

    INSERT INTO detection_counts … ON CONFLICT (device_id, bucket, class_name)
    DO UPDATE SET n = detection_counts.n + excluded.n

On PostgreSQL the same statement also advances the device's seq state when the batch
continues the device's seqs exactly (`seq_run`; see `cloud.seqstate` for the rest).

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
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

__all__ = ["COUNT_COLUMNS", "RECORD_COLUMNS", "Aggregates", "RecordWriter", "execute", "writer_for"]

RECORD_COLUMNS = (
    "device_id",
    "record_id",
    "seq",
    "image_id",
    "ts",
    "model_version",
    "prediction",
    "received_at",
    "batch_id",
)
COUNT_COLUMNS = ("device_id", "bucket", "class_name", "n")
ROLLUP_COLUMNS = (
    "grain",
    "bucket",
    "device_id",
    "version_key",
    "n",
    "min_seq",
    "max_seq",
    "min_ts",
    "max_ts",
    "max_received_at",
)
DETECTION_ROLLUP_COLUMNS = ("grain", "bucket", "device_id", "class_name", "n")

# (accepted, the new record_ids when some but not all were new, whether the seq state
# was advanced already)
Inserted = tuple[int, "set[str] | None", bool]


@dataclass(frozen=True, slots=True)
class Aggregates:
    """What a batch adds to the derived tables, computed as if every record were new."""

    totals: list[tuple[float, str, int]]  # (second, class_name, n)
    detections: list[tuple[int, float, str, int]]  # (grain, bucket, class_name, n)
    rollups: list[tuple[Any, ...]]  # cloud.rollups.RollupRow
    seq_run: tuple[int, int] | None = None  # the batch's seqs are exactly lo..hi, once each


def _upsert_sql(
    table: str, columns: Sequence[str], key: Sequence[str], updates: dict[str, str], dialect: str
) -> str:
    """An INSERT … ON CONFLICT DO UPDATE with '?' placeholders (SQLite's VALUES form)."""
    sets = ", ".join(
        f"{column} = {expression.format(t=table + '.')}" for column, expression in updates.items()
    )
    if dialect == "sqlite":
        sets = sets.replace("GREATEST(", "max(").replace("LEAST(", "min(")
    return (
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    )


_ROLLUP_UPDATES = {
    "n": "{t}n + excluded.n",
    "min_seq": "LEAST({t}min_seq, excluded.min_seq)",
    "max_seq": "GREATEST({t}max_seq, excluded.max_seq)",
    "min_ts": "LEAST({t}min_ts, excluded.min_ts)",
    "max_ts": "GREATEST({t}max_ts, excluded.max_ts)",
    "max_received_at": "GREATEST({t}max_received_at, excluded.max_received_at)",
}
_SUM_N = {"n": "{t}n + excluded.n"}


def _tail(statement: str) -> str:
    """The ON CONFLICT … part of an `_upsert_sql` statement."""
    return statement[statement.index(" ON CONFLICT") :]


class RecordWriter(Protocol):
    """Write a batch inside the caller's transaction."""

    def insert_records(
        self, conn: Connection, rows: list[tuple[Any, ...]], aggregates: Aggregates
    ) -> Inserted:
        """Insert-or-ignore `rows` (tuples in `RECORD_COLUMNS` order, one device).

        If every row was new, also add `aggregates` (those of all the rows, see
        `add_aggregates`). Return how many rows were inserted, only when that is some
        but not all of them the record_ids of the inserted ones (else None; the caller
        then adds the aggregates of just those), and whether the device's seq state was
        advanced by `aggregates.seq_run` already.
        """
        ...

    def add_aggregates(self, conn: Connection, device_id: str, aggregates: Aggregates) -> None:
        """Add totals, detection rollups and record rollups (each unique and sorted)."""
        ...


def _wrap_sqlite(statement: str, error: sqlite3.Error) -> sa_exc.DBAPIError:
    # The same exception SQLAlchemy would have raised, so translate_db_errors and
    # the 503 handlers see what they always see.
    wrapped = sa_exc.DBAPIError.instance(statement, None, error, sqlite3.Error)
    assert isinstance(wrapped, sa_exc.DBAPIError)  # a DBAPI error always wraps as one
    return wrapped


def _psycopg_execute(
    conn: Connection, statement: str, params: Sequence[Any], binary: bool = True
) -> tuple[int, list[Any]]:
    import psycopg

    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(statement, params, binary=binary)
            rows = cursor.fetchall() if cursor.description is not None else []
            return cursor.rowcount, rows
    except psycopg.Error as error:
        # What SQLAlchemy would raise, so translate_db_errors sees what it always
        # sees; a dead connection is rolled back, found dead and discarded by it.
        raise sa_exc.DBAPIError.instance(
            statement,
            None,
            error,
            psycopg.Error,
            dialect=conn.dialect,
            connection_invalidated=conn.dialect.is_disconnect(error, driver, None),  # type: ignore[arg-type]  # psycopg.Error is the DBAPI Error SQLAlchemy means
        ) from error


def execute(
    conn: Connection, statement: str, params: Sequence[Any] = (), many: bool = False
) -> tuple[int, list[Any]]:
    """Run `statement` ('?' placeholders) on the driver; return (rowcount, rows)."""
    if conn.dialect.name == "sqlite":
        driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            cursor = (
                driver.executemany(statement, params) if many else driver.execute(statement, params)
            )
            return cursor.rowcount, cursor.fetchall()
        except sqlite3.Error as error:
            raise _wrap_sqlite(statement, error) from error
    pg_statement = statement.replace("?", "%s")
    if many:
        import psycopg

        driver_pg = conn.connection.driver_connection
        try:
            with driver_pg.cursor() as cursor:  # type: ignore[union-attr]
                cursor.executemany(pg_statement, params)
                return cursor.rowcount, []
        except psycopg.Error as error:
            raise sa_exc.DBAPIError.instance(
                statement,
                None,
                error,
                psycopg.Error,
                dialect=conn.dialect,
                connection_invalidated=conn.dialect.is_disconnect(error, driver_pg, None),  # type: ignore[arg-type]  # psycopg.Error is the DBAPI Error
            ) from error
    return _psycopg_execute(conn, pg_statement, params, binary=False)


class SqliteWriter:
    """Tuples straight to the sqlite3 driver's executemany."""

    _INSERT = (
        f"INSERT INTO predictions ({', '.join(RECORD_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(RECORD_COLUMNS))})"
        " ON CONFLICT (device_id, record_id, ts) DO NOTHING"
    )
    _NEW = "SELECT record_id FROM predictions WHERE id > ?"
    _ADD = _upsert_sql(
        "detection_counts", COUNT_COLUMNS, ("device_id", "bucket", "class_name"), _SUM_N, "sqlite"
    )
    _ADD_DETECTIONS = _upsert_sql(
        "detection_rollups",
        DETECTION_ROLLUP_COLUMNS,
        ("grain", "bucket", "device_id", "class_name"),
        _SUM_N,
        "sqlite",
    )
    _ADD_ROLLUPS = _upsert_sql(
        "prediction_rollups",
        ROLLUP_COLUMNS,
        ("grain", "bucket", "device_id", "version_key"),
        _ROLLUP_UPDATES,
        "sqlite",
    )

    @staticmethod
    def _driver(conn: Connection) -> sqlite3.Connection:
        return conn.connection.driver_connection  # type: ignore[return-value]

    def insert_records(
        self, conn: Connection, rows: list[tuple[Any, ...]], aggregates: Aggregates
    ) -> Inserted:
        driver = self._driver(conn)
        statement = self._INSERT
        try:
            accepted = driver.executemany(statement, rows).rowcount
            if accepted == len(rows):
                self.add_aggregates(conn, rows[0][0], aggregates)
            if not 0 < accepted < len(rows):
                return accepted, None, False
            statement = self._NEW
            (last,) = driver.execute("SELECT last_insert_rowid()").fetchone()
            cursor = driver.execute(statement, (last - accepted,))
            new_ids = {row[0] for row in cursor}
        except sqlite3.Error as error:
            raise _wrap_sqlite(statement, error) from error
        return accepted, new_ids, False

    def add_aggregates(self, conn: Connection, device_id: str, aggregates: Aggregates) -> None:
        driver = self._driver(conn)
        statement = self._ADD
        try:
            if aggregates.totals:
                driver.executemany(statement, [(device_id, *total) for total in aggregates.totals])
            statement = self._ADD_DETECTIONS
            if aggregates.detections:
                driver.executemany(
                    statement,
                    [(g, b, device_id, name, n) for g, b, name, n in aggregates.detections],
                )
            statement = self._ADD_ROLLUPS
            if aggregates.rollups:
                driver.executemany(
                    statement, [(g, b, device_id, *rest) for g, b, *rest in aggregates.rollups]
                )
        except sqlite3.Error as error:
            raise _wrap_sqlite(statement, error) from error


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


class PostgresWriter:
    """Column arrays through `unnest()`, as binary parameters of the psycopg driver.

    One constant statement per batch (parsed and planned once per connection: psycopg
    prepares it). The arrays go in psycopg's binary format: in text format every
    element is quoted and its quotes escaped by a regex, which for JSON predictions cost
    ~30 µs per record, more than everything else; binary costs ~0.5 µs. SQLAlchemy has
    no switch for that, hence the driver's cursor.
    """

    _TOTALS = (
        f"INSERT INTO detection_counts ({', '.join(COUNT_COLUMNS)})"
        " SELECT %b, t.bucket, t.class_name, t.n"
        " FROM unnest(%b::float8[], %b::text[], %b::int8[]) AS t(bucket, class_name, n)"
        " {where} ORDER BY t.bucket, t.class_name"
        " ON CONFLICT (device_id, bucket, class_name)"
        " DO UPDATE SET n = detection_counts.n + excluded.n"
    )
    _DETECTIONS = (
        f"INSERT INTO detection_rollups ({', '.join(DETECTION_ROLLUP_COLUMNS)})"
        " SELECT t.grain, t.bucket, %b, t.class_name, t.n"
        " FROM unnest(%b::int4[], %b::float8[], %b::text[], %b::int8[])"
        " AS t(grain, bucket, class_name, n)"
        " {where} ORDER BY t.grain, t.bucket, t.class_name"
        + _tail(
            _upsert_sql(
                "detection_rollups",
                DETECTION_ROLLUP_COLUMNS,
                ("grain", "bucket", "device_id", "class_name"),
                _SUM_N,
                "postgresql",
            )
        )
    )
    _ROLLUPS = (
        f"INSERT INTO prediction_rollups ({', '.join(ROLLUP_COLUMNS)})"
        " SELECT t.grain, t.bucket, %b, t.version_key, t.n, t.min_seq, t.max_seq,"
        " t.min_ts, t.max_ts, t.max_received_at"
        " FROM unnest(%b::int4[], %b::float8[], %b::text[], %b::int8[], %b::int8[],"
        " %b::int8[], %b::float8[], %b::float8[], %b::float8[])"
        " AS t(grain, bucket, version_key, n, min_seq, max_seq, min_ts, max_ts,"
        " max_received_at)"
        " {where} ORDER BY t.grain, t.bucket, t.version_key"
        + _tail(
            _upsert_sql(
                "prediction_rollups",
                ROLLUP_COLUMNS,
                ("grain", "bucket", "device_id", "version_key"),
                _ROLLUP_UPDATES,
                "postgresql",
            )
        )
    )
    _ALL_NEW = " WHERE (SELECT all_new FROM ok)"
    # "after X": each data-modifying CTE waits for the previous one (reading it to the
    # end), so every transaction takes its row locks in one order: records, per-second
    # totals, detection rollups, record rollups, seq state (also the order of the slow
    # path in `cloud.ingest`); without that two batches of one device can deadlock.
    _AFTER = " AND (SELECT count(*) FROM {cte}) >= 0"

    # One statement, one round trip: the records, and the aggregates only if every
    # record was new (the common case; otherwise the caller adds the new records' own),
    # and the device's seq state when the batch continues its seqs exactly (else the
    # caller's `cloud.seqstate.hold` does it). It answers how many rows were inserted,
    # only if not all which, and whether the seq state was advanced.
    _INSERT = (
        "WITH ins AS ("
        f" INSERT INTO predictions ({', '.join(RECORD_COLUMNS)})"
        " SELECT %b, src.record_id, src.seq, src.image_id, src.ts, src.model_version,"
        " src.prediction, %b, %b"
        " FROM unnest(%b::text[], %b::int8[], %b::text[], %b::float8[], %b::text[],"
        " %b::text[]) AS src(record_id, seq, image_id, ts, model_version, prediction)"
        " ORDER BY src.record_id, src.ts"
        " ON CONFLICT (device_id, record_id, ts) DO NOTHING RETURNING record_id"
        "), ok AS (SELECT count(*) = %b::int8 AS all_new FROM ins"
        f"), added AS ({_TOTALS.format(where=_ALL_NEW)} RETURNING 1"
        f"), drolled AS ({_DETECTIONS.format(where=_ALL_NEW + _AFTER.format(cte='added'))}"
        " RETURNING 1"
        f"), rolled AS ({_ROLLUPS.format(where=_ALL_NEW + _AFTER.format(cte='drolled'))}"
        " RETURNING 1"
        "), seqs AS ("
        " INSERT INTO device_seqs (device_id, max_seq, contiguous_through, seq_count,"
        " record_count)"
        " SELECT %b, %b::int8, %b::int8, %b::int8, %b::int8"
        " WHERE (SELECT all_new FROM ok) AND %b::int8 IS NOT NULL"
        " AND (SELECT count(*) FROM rolled) >= 0"
        " AND (%b::int8 = 1 OR EXISTS (SELECT 1 FROM device_seqs WHERE device_id = %b))"
        " ON CONFLICT (device_id) DO UPDATE SET max_seq = excluded.max_seq,"
        " contiguous_through = CASE WHEN device_seqs.contiguous_through = device_seqs.max_seq"
        " THEN excluded.max_seq ELSE device_seqs.contiguous_through END,"
        " seq_count = device_seqs.seq_count + excluded.seq_count,"
        " record_count = device_seqs.record_count + excluded.record_count"
        " WHERE device_seqs.max_seq = excluded.max_seq - excluded.seq_count"
        " RETURNING 1"
        ")"
        " SELECT count(*), CASE WHEN count(*) BETWEEN 1 AND %b::int8 - 1"
        " THEN array_agg(record_id) END, (SELECT count(*) FROM seqs) FROM ins"
    )

    @staticmethod
    def _aggregate_params(device_id: str, aggregates: Aggregates) -> list[Any]:
        return [
            device_id,
            *_columns(aggregates.totals, 3),
            device_id,
            *_columns(aggregates.detections, 4),
            device_id,
            *_columns(aggregates.rollups, 9),
        ]

    def insert_records(
        self, conn: Connection, rows: list[tuple[Any, ...]], aggregates: Aggregates
    ) -> Inserted:
        first, n = rows[0], len(rows)
        device_id = first[0]
        _, record_ids, seqs, image_ids, stamps, versions, texts, _, _ = zip(*rows)
        run = aggregates.seq_run
        lo, hi = run if run is not None else (None, None)
        _, [(accepted, new_ids, advanced)] = _psycopg_execute(
            conn,
            self._INSERT,
            (
                device_id,
                first[7],
                first[8],
                list(record_ids),
                list(seqs),
                list(image_ids),
                list(stamps),
                list(versions),
                list(texts),
                n,
                *self._aggregate_params(device_id, aggregates),
                device_id,
                hi,
                hi,
                n,
                n,
                lo,
                lo,
                device_id,
                n,
            ),
        )
        return accepted, (set(new_ids) if new_ids is not None else None), bool(advanced)

    def add_aggregates(self, conn: Connection, device_id: str, aggregates: Aggregates) -> None:
        params = self._aggregate_params(device_id, aggregates)
        if aggregates.totals:
            _psycopg_execute(conn, self._TOTALS.format(where=""), params[0:4])
        if aggregates.detections:
            _psycopg_execute(conn, self._DETECTIONS.format(where=""), params[4:9])
        if aggregates.rollups:
            _psycopg_execute(conn, self._ROLLUPS.format(where=""), params[9:19])


def writer_for(dialect: str) -> RecordWriter:
    """Return the writer for a SQLAlchemy dialect name ('sqlite' or 'postgresql')."""
    if dialect == "sqlite":
        return SqliteWriter()
    if dialect == "postgresql":
        return PostgresWriter()
    raise ValueError(f"no writer for dialect {dialect!r}")
