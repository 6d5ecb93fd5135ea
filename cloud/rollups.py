"""The rollups of a batch (computed in Python at ingest) and the same rollups recounted in SQL.

At ingest `record_rollups` and `detection_rollups` turn a batch's newly stored records
into the rows to add (upsert) to `prediction_rollups` and `detection_rollups`, inside the
batch's transaction, so a retried batch (whose records are no longer new) adds nothing.
`rebuild` recomputes every derived table from the rows with plain SQL: the migration's
back-fill, the volume benchmark's fast fill, and the recount the tests compare against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, text

from cloud.buckets import DETECTION_GRAINS, RECORD_GRAINS, bucket, bucket_sql
from cloud.wire import Record

__all__ = [
    "DERIVED_TABLES",
    "RollupRow",
    "detection_rollups",
    "rebuild",
    "rebuild_statements",
    "record_rollups",
    "version_key",
]

# (grain, bucket, version_key, n, min_seq, max_seq, min_ts, max_ts, max_received_at)
RollupRow = tuple[int, float, str, int, int, int, float, float, float]
DERIVED_TABLES = (
    "prediction_rollups",
    "detection_rollups",
    "device_seqs",
    "seq_missing",
    "seq_repeats",
)


def version_key(model_version: str | None) -> str:
    """'' for no model version, '=' + the version otherwise (see `cloud.schema`)."""
    return "" if model_version is None else "=" + model_version


def record_rollups(records: Iterable[Record], received_at: float) -> list[RollupRow]:
    """The rollup rows of `records` (all newly stored), sorted by their primary key."""
    acc: dict[tuple[int, float, str], list[Any]] = {}
    for record in records:
        seq, ts = record[1], record[3]
        key_version = version_key(record[4])
        for grain in RECORD_GRAINS:
            key = (grain, bucket(ts, grain), key_version)
            row = acc.get(key)
            if row is None:
                acc[key] = [1, seq, seq, ts, ts]
            else:
                row[0] += 1
                if seq < row[1]:
                    row[1] = seq
                if seq > row[2]:
                    row[2] = seq
                if ts < row[3]:
                    row[3] = ts
                if ts > row[4]:
                    row[4] = ts
    return [(*key, *row, received_at) for key, row in sorted(acc.items())]


def detection_rollups(
    totals: Iterable[tuple[float, str, int]],
) -> list[tuple[int, float, str, int]]:
    """(grain, bucket, class_name, n) rows from per-second totals, sorted by key."""
    acc: dict[tuple[int, float, str], int] = {}
    for second, name, n in totals:
        for grain in DETECTION_GRAINS:
            key = (grain, bucket(second, grain), name)
            acc[key] = acc.get(key, 0) + n
    return [(*key, n) for key, n in sorted(acc.items())]


def rebuild_statements(dialect: str) -> list[str]:
    """SQL that empties and refills every derived table from `predictions`.

    `detection_counts` is an input here (counting classes needs the JSON rules of
    `cloud.ingest.count_classes`); the rest follows from the rows. Seqs held only because
    retention expired their records cannot be recounted from rows.
    """
    statements = [f"DELETE FROM {table}" for table in DERIVED_TABLES]
    for grain in RECORD_GRAINS:
        statements.append(
            "INSERT INTO prediction_rollups (grain, bucket, device_id, version_key, n,"
            " min_seq, max_seq, min_ts, max_ts, max_received_at)"
            f" SELECT {grain}, {bucket_sql('ts', grain, dialect)}, device_id,"
            " COALESCE('=' || model_version, ''), count(*), min(seq), max(seq), min(ts),"
            " max(ts), max(received_at) FROM predictions GROUP BY 2, 3, 4"
        )
    for grain in DETECTION_GRAINS:
        statements.append(
            "INSERT INTO detection_rollups (grain, bucket, device_id, class_name, n)"
            f" SELECT {grain}, {bucket_sql('bucket', grain, dialect)}, device_id,"
            " class_name, sum(n) FROM detection_counts GROUP BY 2, 3, 4"
        )
    statements += [
        "INSERT INTO seq_missing (device_id, hi, lo)"
        " SELECT device_id, seq - 1, COALESCE(prev, 0) + 1 FROM ("
        "  SELECT device_id, seq, lag(seq) OVER (PARTITION BY device_id ORDER BY seq) AS prev"
        "  FROM (SELECT DISTINCT device_id, seq FROM predictions) AS d) AS l"
        " WHERE seq - COALESCE(prev, 0) > 1",
        "INSERT INTO device_seqs (device_id, max_seq, contiguous_through, seq_count,"
        " record_count)"
        " SELECT device_id, max(seq), 0, count(DISTINCT seq), count(*) FROM predictions"
        " GROUP BY device_id",
        "UPDATE device_seqs SET contiguous_through = COALESCE((SELECT min(m.lo) - 1"
        " FROM seq_missing m WHERE m.device_id = device_seqs.device_id), max_seq)",
        "INSERT INTO seq_repeats (device_id, seq, record_id, ts)"
        " SELECT p.device_id, p.seq, p.record_id, p.ts FROM predictions p JOIN ("
        "  SELECT device_id, seq FROM predictions GROUP BY device_id, seq"
        "  HAVING count(*) > 1) AS r ON r.device_id = p.device_id AND r.seq = p.seq",
    ]
    return statements


def rebuild(conn: Connection) -> None:
    """Run `rebuild_statements` in the caller's transaction."""
    for statement in rebuild_statements(conn.dialect.name):
        conn.execute(text(statement))
