"""Engine construction for the two supported backends, SQLite and PostgreSQL.

One `Database` per app: it owns the SQLAlchemy engine (created by the app factory, never at
import time) and the write lock that serializes SQLite writers inside one process.

SQLite (embedded/local mode, one host):
  * WAL so readers (`/stats`, `/predictions`) never block the writer and vice versa.
  * `synchronous=NORMAL` (configurable): in WAL mode a commit survives a process crash; a
    power cut may lose the last commits since the previous checkpoint. `FULL` closes that
    window at roughly one fsync per batch.
  * `busy_timeout` so a writer in another process makes us wait, not fail at once; past
    it the request becomes a retryable 503.
  * `foreign_keys=ON` because SQLite ignores declared foreign keys otherwise.
  * `wal_autocheckpoint` raised to 10,000 pages (see `CloudSettings`).
  * SQLAlchemy emits BEGIN itself (the sqlite3 module's legacy mode would not BEGIN before
    SELECT or DDL), so reads see one snapshot and migrations are transactional.

PostgreSQL (the scale path, many replicas): a QueuePool per process of `db_pool_size`
(default 10) connections plus `db_max_overflow` (default 10) temporary ones, waiting at
most `db_pool_timeout` (default 10 s) for a free one before the request becomes a 503.
So one replica holds at most 20 connections; PostgreSQL's default max_connections=100
leaves room for four replicas plus admin sessions. `pool_pre_ping` replaces connections
killed by a database restart before they are used, `pool_recycle` retires them every 30
minutes, and `lock_timeout` bounds lock waits so nothing hangs past the edge's timeout.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url

from cloud.settings import CloudSettings

__all__ = ["Database", "create_db_engine", "sqlite_path"]


def sqlite_path(url: URL) -> Path:
    """Return the database file of a SQLite URL, refusing in-memory databases.

    An in-memory database would be private to each pooled connection (and lost on exit),
    which silently breaks exactly-once storage, so it is rejected up front.
    """
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise ValueError("in-memory SQLite is not supported; use sqlite:///path/to/file.db")
    return Path(database)


def _sqlite_engine(url: URL, settings: CloudSettings) -> Engine:
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
            "check_same_thread": False,
        },
    )
    synchronous = settings.sqlite_synchronous
    busy_ms = int(settings.sqlite_busy_timeout_ms)
    checkpoint = int(settings.sqlite_wal_autocheckpoint)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, see module docstring
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA wal_autocheckpoint={checkpoint}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight to the driver: exec_driver_sql() would run the whole SQLAlchemy
        # execution machinery (and events) for every transaction on the hot path.
        conn.connection.driver_connection.execute("BEGIN")

    return engine


def _postgres_engine(url: URL, settings: CloudSettings) -> Engine:
    options = f"-c lock_timeout={int(settings.db_lock_timeout_ms)}"
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "edgebuf-cloud",
            "options": options,
        },
    )


def create_db_engine(settings: CloudSettings) -> Engine:
    """Create (without connecting) the engine for `settings.database_url`."""
    url = make_url(settings.database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, settings)
    if backend == "postgresql":
        if url.get_driver_name() != "psycopg":
            raise ValueError("use a postgresql+psycopg:// URL (psycopg 3 is the driver)")
        return _postgres_engine(url, settings)
    raise ValueError(f"unsupported database backend {backend!r}; use sqlite or postgresql")


class Database:
    """The engine of one app plus what its writers must share."""

    def __init__(self, settings: CloudSettings) -> None:
        self.engine = create_db_engine(settings)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        # SQLite has one writer at a time anyway; queueing writers on a Python lock is
        # fair and cheap, whereas letting them spin in SQLite's busy handler (sleep and
        # retry) wastes latency and can starve one of them past busy_timeout.
        self.write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def ping(self) -> None:
        """Run `SELECT 1`; raises a SQLAlchemy error when the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection (idempotent)."""
        self.engine.dispose()
