"""Engine construction for the two supported backends, SQLite and PostgreSQL.

One `Database` per app: it owns the SQLAlchemy engine (created by the app factory, never at
import time) and the write lock that serializes SQLite writers inside one process.

SQLite (embedded/local mode, one host):
  * WAL so readers (`/stats`, `/predictions`) never block the writer and vice versa.
  * `synchronous=FULL` (the default, `durable_ack`): a 200 means the batch is on disk, at
    one fsync per group commit. With `EDGEBUF_DURABLE_ACK=false`, `NORMAL`: a commit
    survives a process crash, but a power cut may lose those since the last checkpoint.
  * `busy_timeout` so a writer in another process makes us wait, not fail at once; past
    it the request becomes a retryable 503.
  * `foreign_keys=ON` because SQLite ignores declared foreign keys otherwise.
  * `wal_autocheckpoint` raised to 10,000 pages (see `CloudSettings`), and checkpoints
    normally run in a background thread instead (`Checkpointer`), off the request path.
  * SQLAlchemy emits BEGIN itself (the sqlite3 module's legacy mode would not BEGIN before
    SELECT or DDL), so reads see one snapshot and migrations are transactional.

PostgreSQL (the scale path, many replicas): a QueuePool per process of `db_pool_size`
(default 20) connections, kept open once opened, and `db_max_overflow` (default 0) more
that are closed on return (a new backend per request under steady load: avoid), waiting
at most `db_pool_timeout` (default 10 s) for a free one before the request becomes a 503.
So one replica holds at most 20 connections; PostgreSQL's default max_connections=100
leaves room for four replicas plus admin sessions. A connection idle for
`db_ping_after_idle` seconds is pinged before use, so one killed by a database restart is
replaced first (pinging every checkout would add a round trip to every request),
`pool_recycle` retires them every 30 minutes, and `lock_timeout` bounds lock waits so
nothing hangs past the edge's timeout.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.engine import URL, Engine, make_url

from cloud.settings import CloudSettings

__all__ = ["Checkpointer", "Database", "create_db_engine", "sqlite_path"]

log = logging.getLogger(__name__)


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
    synchronous = settings.sqlite_sync_mode
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


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Test a pooled connection before use, but only if it sat idle `idle_seconds`.

    `pool_pre_ping` pings on every checkout: one more round trip per request (~10% of
    ingest on PostgreSQL). A connection that was in use a moment ago is almost surely
    alive; one that sat idle may have been cut by a database restart, a failover or a
    firewall, which is when pinging pays. A connection that dies mid-use anyway fails that
    one request with a 503 (the edge retries), and SQLAlchemy then invalidates the whole
    pool, so the next requests get fresh connections.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["edgebuf_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("edgebuf_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as error:  # noqa: BLE001 - any failure means: not usable
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error


def _postgres_engine(url: URL, settings: CloudSettings) -> Engine:
    options = f"-c lock_timeout={int(settings.db_lock_timeout_ms)}"
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        connect_args={
            "connect_timeout": settings.db_connect_timeout,
            "application_name": "edgebuf-cloud",
            "options": options,
        },
    )
    _ping_after_idle(engine, settings.db_ping_after_idle)
    if settings.durable_ack:
        _durable_commits(engine)
    return engine


def _durable_commits(engine: Engine) -> None:
    """A 200 must mean durable: a session that would run with synchronous_commit=off (set
    for the server, database or role) is switched back on. Stronger settings (remote_write,
    remote_apply with synchronous replication) are kept as they are."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            if cur.fetchone()[0] == "off":
                log.warning(
                    "synchronous_commit=off on this database: set to on for ingest"
                    " (EDGEBUF_DURABLE_ACK=false keeps it off)"
                )
                cur.execute("SET SESSION synchronous_commit = on")
        dbapi_conn.commit()


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


class Checkpointer:
    """Copies SQLite's WAL back into the database file from a thread of its own.

    An automatic checkpoint runs inside the COMMIT that crosses `wal_autocheckpoint`: that
    request then waits while megabytes are copied and fsynced (~20% of ingest time). Here
    a daemon thread, woken by commits, runs a PASSIVE checkpoint at most every `interval`
    seconds on its own connection. PASSIVE never blocks writers, and sqlite3 releases the
    GIL while it works, so the copy and the fsync overlap the next requests instead of
    delaying one of them. The connections' own autocheckpoint stays as the safety net
    should this thread fall behind (one of the two then just finds the other busy).
    """

    def __init__(self, path: Path, busy_timeout_s: float, interval: float) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def notify(self) -> None:
        """Tell the thread a commit happened (starts it on first use)."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="edgebuf-cloud-checkpoint", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                self._wake.wait()
                if self._stop.is_set():
                    break
                self._wake.clear()
                try:
                    if conn is None:  # mode=rw: never create a file that was removed
                        conn = sqlite3.connect(
                            f"file:{quote(str(self._path))}?mode=rw",
                            uri=True,
                            isolation_level=None,
                            timeout=self._busy_timeout_s,
                            check_same_thread=False,
                        )
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    # Not fatal: the next commit's autocheckpoint or our next turn retries.
                    log.debug("background WAL checkpoint failed", exc_info=True)
                    if conn is not None:
                        conn.close()
                        conn = None
                self._stop.wait(self._interval)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        """Stop the thread (idempotent); a later `notify` starts a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._wake.set()
        if thread is not None:
            thread.join(timeout=30)
        self._stop.clear()
        self._wake.clear()


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
        self.checkpointer: Checkpointer | None = None
        if self.is_sqlite and settings.sqlite_background_checkpoint > 0:
            self.checkpointer = Checkpointer(
                sqlite_path(self.engine.url),
                settings.sqlite_busy_timeout_ms / 1000,
                settings.sqlite_background_checkpoint,
            )

    def committed(self) -> None:
        """Call after each write transaction (wakes the SQLite checkpointer)."""
        if self.checkpointer is not None:
            self.checkpointer.notify()

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    def ping(self) -> None:
        """Run `SELECT 1`; raises a SQLAlchemy error when the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Stop the checkpointer and close every pooled connection (idempotent)."""
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
