"""Read side: statistics, paging through stored records, seq gaps and the seq watermark.

`/stats` never scans the records: it sums rollups (`cloud.rollups`: per device, hour,
minute or second, and model version) over the whole buckets inside the time window, and
reads rows only for what the window's two edges cut out of a second (through the
(device_id, ts) index), so its cost grows with devices x buckets in the window, not with the records.
Detections per class work the same way over hour, minute and second totals; a bound
inside a second recounts that second's records from their predictions. Distinct seqs
per device in a window (for `missing_seqs`) are the records minus the repeats of a seq,
which `seq_repeats` lists. `/devices/{id}/gaps` and `/devices/{id}/watermark` read the
incremental seq state (`cloud.seqstate`): O(ranges returned).

Under retention the figures are those of the records kept: everything below the cutoff
that maintenance recorded is left out, even while its rows are still being deleted.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, literal, select, union_all

from cloud.buckets import DETECTION_GRAINS, RECORD_GRAINS, cover
from cloud.db import Database
from cloud.errors import translate_db_errors
from cloud.ingest import count_classes
from cloud.schema import (
    cloud_state,
    detection_counts,
    detection_rollups,
    device_seqs,
    prediction_rollups,
    predictions,
    seq_missing,
    seq_repeats,
)

__all__ = [
    "CUTOFF_NAME",
    "Filters",
    "device_gaps",
    "predictions_page",
    "read_cutoff",
    "stats",
    "watermark",
]

P = predictions.c
D = detection_counts.c
DR = detection_rollups.c
R = prediction_rollups.c
S = device_seqs.c
M = seq_missing.c
X = seq_repeats.c
CUTOFF_NAME = "retention_cutoff"


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

    def kept(self, cutoff: float | None) -> Filters:
        """These filters narrowed to the records retention keeps (ts >= cutoff)."""
        if cutoff is None or (self.since is not None and self.since >= cutoff):
            return self
        return Filters(self.device_id, cutoff, self.until)


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


def read_cutoff(conn: Connection) -> float | None:
    """The retention cutoff maintenance applied (None: nothing ever expired)."""
    value = conn.execute(
        select(cloud_state.c.value).where(cloud_state.c.name == CUTOFF_NAME)
    ).scalar()
    return None if value is None else float(value)


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _range(column: Any, low: float | None, high: float | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if low is not None:
        where.append(column >= low)
    if high is not None:
        where.append(column < high)
    return where


def _per_range(
    table: Any,
    columns: list[Any],
    group: list[Any],
    where: list[Any],
    whole: tuple[tuple[int, float | None, float | None], ...],
) -> Any:
    """One aggregate per whole-bucket range, as UNION ALL: each arm is a primary-key range
    scan (grain, bucket, ...), which one OR of all the ranges would not be."""
    arms = [
        select(*columns)
        .where(table.c.grain == grain, *_range(table.c.bucket, low, high), *where)
        .group_by(*group)
        for grain, low, high in whole
    ]
    return arms[0] if len(arms) == 1 else union_all(*arms)


def _devices(conn: Connection, device_id: str | None) -> list[str]:
    """The devices whose rows an edge read must look at (the index leads with device)."""
    if device_id is not None:
        return [device_id]
    return list(conn.execute(select(S.device_id).order_by(S.device_id)).scalars())


def _detections_per_class(conn: Connection, filters: Filters, devices: list[str]) -> dict[str, int]:
    """Hour and minute rollups, then seconds, then the records of cut seconds.

    A record counts if since <= ts < until and its detections sit in the totals of
    second F = floor(ts). All of a second's records are inside the window exactly when
    ceil(since) <= F < floor(until) (integers, exact as doubles); that range of seconds
    is split into whole hours, whole minutes and single seconds (`cloud.buckets.cover`).
    The records of the at most two seconds the bounds fall inside are counted from their
    stored predictions. Sorted by class name, the same on both backends.
    """
    since, until = filters.since, filters.until
    low = None if since is None else float(math.ceil(since))
    high = None if until is None else float(math.floor(until))
    edges: list[tuple[float | None, float | None]] = []
    counts: dict[str, int] = {}
    if low is not None and high is not None and low > high:
        edges.append((since, until))  # inside one second: no whole second in between
    else:
        if since is not None and since < low:  # type: ignore[operator]
            edges.append((since, low))
        if until is not None and high < until:  # type: ignore[operator]
            edges.append((high, until))
        seconds = cover(low, high, DETECTION_GRAINS)
        device_where = [] if filters.device_id is None else [DR.device_id == filters.device_id]
        if seconds.whole:
            query = _per_range(
                detection_rollups,
                [DR.class_name, func.sum(DR.n)],
                [DR.class_name],
                device_where,
                seconds.whole,
            )
            for name, n in conn.execute(query):
                counts[name] = counts.get(name, 0) + int(n)
        for start, end in seconds.rest:
            query = (
                select(D.class_name, func.sum(D.n))
                .where(D.device_id.in_(devices), *_range(D.bucket, start, end))
                .group_by(D.class_name)
            )
            for name, n in conn.execute(query):
                counts[name] = counts.get(name, 0) + int(n)
    for start, end in edges:
        query = select(P.prediction).where(P.device_id.in_(devices), *_range(P.ts, start, end))
        for (text,) in conn.execute(query):
            for name, n in count_classes(json.loads(text)).items():
                counts[name] = counts.get(name, 0) + n
    return dict(sorted(counts.items()))


# per (device, version_key): [n, min_seq, max_seq, min_ts, max_ts, max_received_at]
_Acc = dict[tuple[str, str], list[Any]]


def _merge(acc: _Acc, rows: Any) -> None:
    for device, key, n, min_seq, max_seq, min_ts, max_ts, received in rows:
        if not n:
            continue
        values = [int(n), int(min_seq), int(max_seq), float(min_ts), float(max_ts), float(received)]
        old = acc.get((device, key))
        if old is None:
            acc[(device, key)] = values
        else:
            acc[(device, key)] = [
                old[0] + values[0],
                min(old[1], values[1]),
                max(old[2], values[2]),
                min(old[3], values[3]),
                max(old[4], values[4]),
                max(old[5], values[5]),
            ]


def _record_figures(conn: Connection, filters: Filters, devices: list[str]) -> _Acc:
    acc: _Acc = {}
    window = cover(filters.since, filters.until, RECORD_GRAINS)
    device_where = [] if filters.device_id is None else [R.device_id == filters.device_id]
    if window.whole:
        _merge(
            acc,
            conn.execute(
                _per_range(
                    prediction_rollups,
                    [
                        R.device_id,
                        R.version_key,
                        func.sum(R.n),
                        func.min(R.min_seq),
                        func.max(R.max_seq),
                        func.min(R.min_ts),
                        func.max(R.max_ts),
                        func.max(R.max_received_at),
                    ],
                    [R.device_id, R.version_key],
                    device_where,
                    window.whole,
                )
            ),
        )
    key = func.coalesce(literal("=") + P.model_version, literal(""))
    for start, end in window.rest:
        _merge(
            acc,
            conn.execute(
                select(
                    P.device_id,
                    key,
                    func.count(),
                    func.min(P.seq),
                    func.max(P.seq),
                    func.min(P.ts),
                    func.max(P.ts),
                    func.max(P.received_at),
                )
                .where(P.device_id.in_(devices), *_range(P.ts, start, end))
                .group_by(P.device_id, key)
            ),
        )
    return acc


def _repeats(conn: Connection, filters: Filters) -> dict[str, int]:
    """Per device: records in the window minus distinct seqs in the window."""
    where = _range(X.ts, filters.since, filters.until)
    if filters.device_id is not None:
        where.append(X.device_id == filters.device_id)
    extra: dict[str, int] = {}
    query = (
        select(X.device_id, func.count())
        .where(*where)
        .group_by(X.device_id, X.seq)
        .having(func.count() > 1)
    )
    for device, n in conn.execute(query):
        extra[device] = extra.get(device, 0) + int(n) - 1
    return extra


def stats(db: Database, filters: Filters) -> dict[str, Any]:
    """Return totals, per-device figures, per-model counts and detections per class."""
    with _snapshot(db) as conn:
        filters = filters.kept(read_cutoff(conn))
        devices = _devices(conn, filters.device_id)
        acc = _record_figures(conn, filters, devices)
        repeats = _repeats(conn, filters)
        classes = _detections_per_class(conn, filters, devices)
    per_device: dict[str, list[Any]] = {}
    versions: dict[str, int] = {}
    for (device, key), (n, min_seq, max_seq, min_ts, max_ts, received) in acc.items():
        versions[key] = versions.get(key, 0) + n
        old = per_device.get(device)
        per_device[device] = (
            [n, min_seq, max_seq, min_ts, max_ts, received]
            if old is None
            else [
                old[0] + n,
                min(old[1], min_seq),
                max(old[2], max_seq),
                min(old[3], min_ts),
                max(old[4], max_ts),
                max(old[5], received),
            ]
        )
    rows = sorted(per_device.items())
    return {
        "total_records": sum(row[0] for _, row in rows),
        "device_count": len(rows),
        "first_timestamp": min((row[3] for _, row in rows), default=None),
        "last_timestamp": max((row[4] for _, row in rows), default=None),
        "last_received_at": max((row[5] for _, row in rows), default=None),
        "devices": [
            {
                "device_id": device,
                "count": n,
                "first_timestamp": min_ts,
                "last_timestamp": max_ts,
                "last_received_at": received,
                "min_seq": min_seq,
                "max_seq": max_seq,
                "missing_seqs": max_seq - min_seq + 1 - (n - repeats.get(device, 0)),
            }
            for device, (n, min_seq, max_seq, min_ts, max_ts, received) in rows
        ],
        "model_versions": [
            {"model_version": key[1:] if key else None, "count": n}
            for key, n in sorted(versions.items())
        ],
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
            P.id,
            P.record_id,
            P.seq,
            P.image_id,
            P.device_id,
            P.ts,
            P.model_version,
            P.prediction,
            P.received_at,
        )
        .where(*where)
        .order_by(P.id)
        .limit(limit + 1)  # one extra row tells whether another page exists
    )
    with translate_db_errors(), db.engine.connect() as conn:
        cutoff = read_cutoff(conn)
        if cutoff is not None:  # records retention expired, possibly not yet deleted
            query = query.where(P.ts >= cutoff)
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


def _seq_state(conn: Connection, device_id: str) -> Any:
    return conn.execute(
        select(S.max_seq, S.contiguous_through, S.seq_count, S.record_count).where(
            S.device_id == device_id
        )
    ).one_or_none()


def _missing(conn: Connection, device_id: str, start: int, limit: int) -> list[list[int]]:
    """Up to `limit` missing ranges ending at or above `start`, cut to start at `start`."""
    rows = conn.execute(
        select(M.lo, M.hi)
        .where(M.device_id == device_id, M.hi >= start)
        .order_by(M.hi)
        .limit(limit)
    ).all()
    return [[max(int(lo), start), int(hi)] for lo, hi in rows]


def device_gaps(db: Database, device_id: str, limit: int) -> dict[str, Any] | None:
    """The device's held seq range and the missing ranges inside it; None if unknown.

    From the incremental seq state, so seqs acknowledged and later expired by retention
    still count as held. `count` is the records acknowledged (two may share a seq).
    """
    with _snapshot(db) as conn:
        state = _seq_state(conn, device_id)
        if state is None:
            return None
        max_seq, contiguous, distinct, records = (int(v) for v in state)
        low = 1
        if contiguous == 0:  # seq 1 is missing: the held range starts after the first gap
            first = conn.execute(
                select(M.hi).where(M.device_id == device_id).order_by(M.hi).limit(1)
            ).scalar()
            low = int(first or 0) + 1
        gaps = _missing(conn, device_id, low, limit)
    return {
        "device_id": device_id,
        "min_seq": low,
        "max_seq": max_seq,
        "count": records,
        "missing": max_seq - low + 1 - distinct,
        "gaps": gaps,
    }


def watermark(db: Database, device_id: str, from_seq: int, limit: int) -> dict[str, Any]:
    """What the cloud holds of a device's seqs, for the edge's reconciliation.

    `missing` lists the ranges not held inside [max(from_seq, contiguous_through + 1),
    max_seq], at most `limit` of them (`complete` false when cut there). An unknown
    device holds nothing: zeros and no ranges.
    """
    with _snapshot(db) as conn:
        state = _seq_state(conn, device_id)
        if state is None:
            return {
                "device_id": device_id,
                "contiguous_through": 0,
                "max_seq": 0,
                "count": 0,
                "missing": [],
                "complete": True,
            }
        max_seq, contiguous, distinct, _ = (int(v) for v in state)
        start = max(from_seq, contiguous + 1)
        ranges = _missing(conn, device_id, start, limit + 1) if start <= max_seq else []
    return {
        "device_id": device_id,
        "contiguous_through": contiguous,
        "max_seq": max_seq,
        "count": distinct,
        "missing": ranges[:limit],
        "complete": len(ranges) <= limit,
    }
