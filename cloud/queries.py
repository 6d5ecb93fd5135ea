"""Read side: statistics, paging through stored records, and seq gaps, all in SQL.

Every figure is an aggregate the database computes (COUNT, MIN/MAX, GROUP BY, a LEAD()
window); no endpoint loads rows into Python to count them, so the cost of `/stats` grows
with the number of devices and classes, not with the number of records. The one
exception is bounded: a time bound that falls inside a second makes `/stats` recount the
detections of that second's records from their predictions (see `_detections_per_class`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, distinct, func, select

from cloud.db import Database
from cloud.errors import translate_db_errors
from cloud.ingest import count_classes
from cloud.schema import detection_counts, predictions

__all__ = ["Filters", "device_gaps", "predictions_page", "stats"]

P = predictions.c
D = detection_counts.c


@dataclass(frozen=True)
class Filters:
    """Optional device and time window (`since <= timestamp < until`, epoch seconds)."""

    device_id: str | None = None
    since: float | None = None
    until: float | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        """Return the WHERE clauses on the predictions table."""
        where: list[ColumnElement[bool]] = []
        if self.device_id is not None:
            where.append(P.device_id == self.device_id)
        if self.since is not None:
            where.append(P.ts >= self.since)
        if self.until is not None:
            where.append(P.ts < self.until)
        return where


@contextlib.contextmanager
def _snapshot(db: Database) -> Iterator[Connection]:
    """Yield a connection whose reads all see one snapshot (figures that add up).

    SQLite already reads a snapshot inside our explicit BEGIN; PostgreSQL needs
    REPEATABLE READ, else each statement of /stats could see different commits.
    """
    with translate_db_errors(), db.engine.connect() as conn:
        if not db.is_sqlite:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _detections_per_class(conn: Connection, filters: Filters) -> dict[str, int]:
    """Sum the per-second totals; count the seconds a time bound cuts from the records.

    A record counts if since <= ts < until, and its detections sit in the total of
    bucket = floor(ts). All of a bucket's records are inside the window exactly when
    ceil(since) <= bucket < floor(until) (both bounds are integers, exact as doubles), so
    those totals are summed in SQL. What the window holds outside that range, i.e. the
    records of the at most two seconds the bounds fall inside, are counted from their
    stored predictions - bounded by two seconds of data per device, however long the
    window. Sorted by class name, the same on both backends.
    """
    since, until = filters.since, filters.until
    low = None if since is None else float(math.ceil(since))
    high = None if until is None else float(math.floor(until))
    where: list[ColumnElement[bool]] = []
    if filters.device_id is not None:
        where.append(D.device_id == filters.device_id)
    if low is not None:
        where.append(D.bucket >= low)
    if high is not None:
        where.append(D.bucket < high)
    edges: list[tuple[float | None, float | None]] = []
    if low is not None and high is not None and low > high:
        edges.append((since, until))  # inside one second: no whole bucket in between
    else:
        if since is not None and since < low:  # type: ignore[operator]
            edges.append((since, low))
        if until is not None and high < until:  # type: ignore[operator]
            edges.append((high, until))
    counts: dict[str, int] = {}
    if low is None or high is None or low <= high:
        query = select(D.class_name, func.sum(D.n)).where(*where).group_by(D.class_name)
        for name, n in conn.execute(query):
            counts[name] = int(n)
    for start, end in edges:
        part = Filters(filters.device_id, start, end)
        for (text,) in conn.execute(select(P.prediction).where(*part.clauses())):
            for name, n in count_classes(json.loads(text)).items():
                counts[name] = counts.get(name, 0) + n
    return dict(sorted(counts.items()))


def stats(db: Database, filters: Filters) -> dict[str, Any]:
    """Return totals, per-device figures, per-model counts and detections per class."""
    where = filters.clauses()
    with _snapshot(db) as conn:
        total = conn.execute(
            select(
                func.count(), func.count(distinct(P.device_id)),
                func.min(P.ts), func.max(P.ts), func.max(P.received_at),
            ).where(*where)
        ).one()
        devices = conn.execute(
            select(
                P.device_id, func.count(), func.min(P.ts), func.max(P.ts),
                func.max(P.received_at), func.min(P.seq), func.max(P.seq),
                func.count(distinct(P.seq)),
            ).where(*where).group_by(P.device_id).order_by(P.device_id)
        ).all()
        versions = conn.execute(
            select(P.model_version, func.count())
            .where(*where)
            .group_by(P.model_version)
            .order_by(P.model_version.asc().nulls_first())
        ).all()
        classes = _detections_per_class(conn, filters)
    return {
        "total_records": total[0],
        "device_count": total[1],
        "first_timestamp": _num(total[2]),
        "last_timestamp": _num(total[3]),
        "last_received_at": _num(total[4]),
        "devices": [
            {
                "device_id": row[0],
                "count": row[1],
                "first_timestamp": _num(row[2]),
                "last_timestamp": _num(row[3]),
                "last_received_at": _num(row[4]),
                "min_seq": row[5],
                "max_seq": row[6],
                "missing_seqs": row[6] - row[5] + 1 - row[7],
            }
            for row in devices
        ],
        "model_versions": [{"model_version": mv, "count": n} for mv, n in versions],
        "detections_per_class": classes,
    }


def predictions_page(
    db: Database, filters: Filters, limit: int, after_id: int | None
) -> tuple[list[dict[str, Any]], int | None]:
    """Return up to `limit` records with id > `after_id` in id order, and the next cursor.

    Keyset paging on the integer primary key: every page costs the same however deep,
    and records stored while a client pages through appear exactly once (ids only grow).
    """
    where = filters.clauses()
    if after_id is not None:
        where.append(P.id > after_id)
    query = (
        select(
            P.id, P.record_id, P.seq, P.image_id, P.device_id, P.ts, P.model_version,
            P.prediction, P.received_at,
        )
        .where(*where)
        .order_by(P.id)
        .limit(limit + 1)  # one extra row tells whether another page exists
    )
    with translate_db_errors(), db.engine.connect() as conn:
        rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "record_id": row.record_id,
            "seq": row.seq,
            "image_id": row.image_id,
            "device_id": row.device_id,
            "timestamp": float(row.ts),
            "model_version": row.model_version,
            "prediction": json.loads(row.prediction),
            "received_at": float(row.received_at),
        }
        for row in rows
    ]
    return items, (rows[-1].id if more and rows else None)


def device_gaps(db: Database, device_id: str, limit: int) -> dict[str, Any] | None:
    """Return the device's seq range and its missing ranges, or None for an unknown device.

    A gap is found where LEAD(seq) OVER (ORDER BY seq) jumps by more than one; repeated
    seqs (two records with one seq) neither create gaps nor hide them.
    """
    with _snapshot(db) as conn:
        summary = conn.execute(
            select(
                func.min(P.seq), func.max(P.seq), func.count(), func.count(distinct(P.seq))
            ).where(P.device_id == device_id)
        ).one()
        if summary[2] == 0:
            return None
        ordered = select(
            P.seq.label("seq"), func.lead(P.seq).over(order_by=P.seq).label("next_seq")
        ).where(P.device_id == device_id).subquery()
        gaps = conn.execute(
            select(ordered.c.seq + 1, ordered.c.next_seq - 1)
            # Not `next_seq > seq + 1`: at seq = 2**63-1 that overflows BIGINT on PostgreSQL.
            .where(ordered.c.next_seq - ordered.c.seq > 1)
            .order_by(ordered.c.seq)
            .limit(limit)
        ).all()
    low, high, count, distinct_seqs = summary
    return {
        "device_id": device_id,
        "min_seq": low,
        "max_seq": high,
        "count": count,
        "missing": high - low + 1 - distinct_seqs,
        "gaps": [[start, end] for start, end in gaps],
    }
