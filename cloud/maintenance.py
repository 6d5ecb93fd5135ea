"""The service's maintenance: day partitions ahead (PostgreSQL) and retention (both backends).

One round (`Maintenance.run_once`), at start-up and then every `maintenance_interval`
seconds from a daemon thread, never inside a request:

1. PostgreSQL: create the day partitions of `predictions` from yesterday to
   `partition_days_ahead` days ahead. Rows that already went to the default partition
   for such a day (its partition did not exist yet) are moved into the new partition in
   the same transaction, so creating it never fails on them.
2. With `EDGEBUF_RETENTION_DAYS`: record the cutoff (a UTC day boundary,
   `cloud.retention`) in `cloud_state` first, in its own transaction: from then on every
   read leaves out what lies below it, so the figures stay consistent while the rows go.
   Then drop the day partitions below it (PostgreSQL) or delete the rows in chunks of
   `CHUNK` (SQLite, and the default partition), and delete the rollups, per-second
   totals and repeat entries below it. The seq state is left alone: an acknowledged seq
   stays held, so the edge's reconciliation never sees expired records as missing.

With several replicas exactly one runs a round at a time: a session-level
`pg_try_advisory_lock` on PostgreSQL, a non-blocking `flock` on `<db>.maintenance.lock`
for SQLite; whoever does not get it skips the round (the holder is doing the work).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from cloud.db import Database, sqlite_path
from cloud.queries import CUTOFF_NAME
from cloud.retention import DAY, retention_cutoff
from cloud.schema import PARTITION_PREFIX
from cloud.settings import CloudSettings

__all__ = ["CHUNK", "MAINTENANCE_LOCK_KEY", "Maintenance", "Report", "partition_name"]

log = logging.getLogger(__name__)

MAINTENANCE_LOCK_KEY = zlib.crc32(b"edgebuf-cloud:maintenance")
CHUNK = 5000
MAINTENANCE_LOCK_TIMEOUT_MS = 60_000
_EPOCH = datetime.date(1970, 1, 1)


def partition_name(day: int) -> str:
    """`predictions_pYYYYMMDD` for day number `day` (days since 1970-01-01, UTC)."""
    return PARTITION_PREFIX + (_EPOCH + datetime.timedelta(days=day)).strftime("%Y%m%d")


def _day_of(name: str) -> int | None:
    try:
        date = datetime.datetime.strptime(name[len(PARTITION_PREFIX) :], "%Y%m%d").date()
    except ValueError:
        return None
    return (date - _EPOCH).days


@dataclass
class Report:
    """What one maintenance round did."""

    partitions_created: list[str] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    rows_deleted: int = 0
    rows_moved: int = 0
    cutoff: float | None = None


class Maintenance:
    """Partitions ahead and retention for one database; see the module docstring."""

    def __init__(
        self,
        db: Database,
        settings: CloudSettings,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
        on_cutoff: Callable[[float | None], None] | None = None,
    ) -> None:
        self._on_cutoff = on_cutoff
        self._db = db
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[Connection | None]:
        """Yield a connection holding the maintenance lock, or None if another has it."""
        engine = self._db.engine
        if self._db.is_sqlite:
            import fcntl

            path = sqlite_path(engine.url)
            lock_path = path.with_name(path.name + ".maintenance.lock")
            with open(lock_path, "a+b") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield None
                    return
                try:
                    with engine.connect() as conn:
                        yield conn
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return
        with engine.connect() as conn:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": MAINTENANCE_LOCK_KEY}
            ).scalar()
            conn.commit()
            if not got:
                yield None
                return
            try:
                conn.execute(text(f"SET lock_timeout = {MAINTENANCE_LOCK_TIMEOUT_MS}"))
                conn.commit()
                yield conn
            finally:
                try:
                    conn.rollback()
                    conn.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MAINTENANCE_LOCK_KEY}
                    )
                    conn.execute(text("RESET lock_timeout"))
                    conn.commit()
                except Exception:  # connection gone: the server released the lock with it
                    log.warning("could not release the maintenance lock", exc_info=True)
                    conn.invalidate()

    # ------------------------------------------------------------------ one round
    def run_once(self, now: float | None = None) -> Report | None:
        """Run one round now; None when another process holds the maintenance lock."""
        now = self._clock() if now is None else now
        with self._exclusive() as conn:
            if conn is None:
                self._count("skipped")
                self._learn_cutoff()
                return None
            report = Report()
            try:
                if not self._db.is_sqlite:
                    self._partitions_ahead(conn, now, report)
                if self._settings.retention_days is not None:
                    report.cutoff = retention_cutoff(now, self._settings.retention_days)
                    self._expire(conn, report.cutoff, report)
            except Exception:
                self._count("failed")
                raise
        self._count("ran")
        if self._on_cutoff is not None:
            self._on_cutoff(report.cutoff)
        if self._metrics is not None:
            self._metrics.partitions_dropped.inc(len(report.partitions_dropped))
            self._metrics.rows_expired.inc(report.rows_deleted)
        return report

    def _learn_cutoff(self) -> None:
        """Pass on the cutoff another replica's maintenance recorded (ingest expires it)."""
        if self._on_cutoff is None or self._settings.retention_days is None:
            return
        with self._db.engine.connect() as conn:
            value = conn.execute(
                text("SELECT value FROM cloud_state WHERE name = :n"), {"n": CUTOFF_NAME}
            ).scalar()
        self._on_cutoff(None if value is None else float(value))

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.maintenance_runs.labels(outcome).inc()

    @staticmethod
    def _partitions(conn: Connection) -> dict[int, str]:
        names = (
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'predictions'::regclass"
                )
            )
            .scalars()
            .all()
        )
        conn.commit()
        days = {_day_of(name): name for name in names if name.startswith(PARTITION_PREFIX)}
        return {day: name for day, name in days.items() if day is not None}

    def _partitions_ahead(self, conn: Connection, now: float, report: Report) -> None:
        today = int(now // DAY)
        existing = self._partitions(conn)
        first = today - 1
        if self._settings.retention_days is not None:
            first = max(first, int(retention_cutoff(now, self._settings.retention_days) // DAY))
        for day in range(first, today + self._settings.partition_days_ahead + 1):
            if day not in existing:
                report.rows_moved += self._create_partition(conn, day)
                report.partitions_created.append(partition_name(day))

    @staticmethod
    def _create_partition(conn: Connection, day: int) -> int:
        name, low, high = partition_name(day), day * DAY, (day + 1) * DAY
        with conn.begin():
            stray = conn.execute(
                text("SELECT count(*) FROM predictions_default WHERE ts >= :low AND ts < :high"),
                {"low": low, "high": high},
            ).scalar()
            if not stray:
                conn.execute(
                    text(
                        f"CREATE TABLE {name} PARTITION OF predictions"
                        f" FOR VALUES FROM ({low}) TO ({high})"
                    )
                )
                return 0
            conn.execute(
                text(
                    f"CREATE TABLE {name}"
                    " (LIKE predictions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                )
            )
            conn.execute(
                text(
                    f"WITH moved AS (DELETE FROM predictions_default WHERE ts >= :low"
                    f" AND ts < :high RETURNING *) INSERT INTO {name} SELECT * FROM moved"
                ),
                {"low": low, "high": high},
            )
            conn.execute(
                text(
                    f"ALTER TABLE predictions ATTACH PARTITION {name}"
                    f" FOR VALUES FROM ({low}) TO ({high})"
                )
            )
        log.info("moved %d rows from the default partition into %s", stray, name)
        return int(stray)

    # ------------------------------------------------------------------ retention
    def _expire(self, conn: Connection, cutoff: float, report: Report) -> None:
        with self._db.write_lock, conn.begin():
            old = conn.execute(
                text("SELECT value FROM cloud_state WHERE name = :n"), {"n": CUTOFF_NAME}
            ).scalar()
            if old is not None and float(old) >= cutoff:
                cutoff = float(old)  # never move back (a replica with a slow clock)
            else:
                conn.execute(
                    text(
                        "INSERT INTO cloud_state (name, value) VALUES (:n, :v)"
                        " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
                    ),
                    {"n": CUTOFF_NAME, "v": cutoff},
                )
        report.cutoff = cutoff
        devices = conn.execute(text("SELECT device_id FROM device_seqs")).scalars().all()
        conn.commit()
        if self._db.is_sqlite:
            for device in devices:
                report.rows_deleted += self._chunked(
                    conn,
                    "DELETE FROM predictions WHERE id IN (SELECT id FROM predictions"
                    " WHERE device_id = :d AND ts < :c LIMIT :n)",
                    {"d": device, "c": cutoff},
                )
                self._chunked(
                    conn,
                    "DELETE FROM detection_counts WHERE (device_id, bucket, class_name)"
                    " IN (SELECT device_id, bucket, class_name FROM detection_counts"
                    " WHERE device_id = :d AND bucket < :c LIMIT :n)",
                    {"d": device, "c": cutoff},
                )
        else:
            for day, name in sorted(self._partitions(conn).items()):
                if (day + 1) * DAY <= cutoff:
                    with conn.begin():
                        conn.execute(text(f"DROP TABLE {name}"))
                    report.partitions_dropped.append(name)
            report.rows_deleted += self._chunked(
                conn,
                "DELETE FROM predictions_default WHERE ctid IN (SELECT ctid FROM"
                " predictions_default WHERE ts < :c LIMIT :n)",
                {"c": cutoff},
            )
            for device in devices:  # through the primary key, one device at a time
                with conn.begin():
                    conn.execute(
                        text("DELETE FROM detection_counts WHERE device_id = :d AND bucket < :c"),
                        {"d": device, "c": cutoff},
                    )
        with self._db.write_lock, conn.begin():
            for table, column in (
                ("prediction_rollups", "bucket"),
                ("detection_rollups", "bucket"),
                ("seq_repeats", "ts"),
            ):
                conn.execute(text(f"DELETE FROM {table} WHERE {column} < :c"), {"c": cutoff})

    def _chunked(self, conn: Connection, statement: str, params: dict[str, Any]) -> int:
        """Run a `LIMIT :n` delete until it deletes less than a chunk; the total deleted."""
        total = 0
        while not self._stop.is_set():
            with self._db.write_lock, conn.begin():
                deleted = conn.execute(text(statement), {**params, "n": CHUNK}).rowcount
            total += deleted
            if deleted < CHUNK:
                break
        return total

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        """Run a round every `maintenance_interval` seconds from a daemon thread."""
        interval = self._settings.maintenance_interval
        if interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name="edgebuf-cloud-maintenance", daemon=True
        )
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.warning("maintenance round failed", exc_info=True)

    def stop(self) -> None:
        """Stop the thread (a round in progress ends after its current chunk)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=60)
        self._stop.clear()
