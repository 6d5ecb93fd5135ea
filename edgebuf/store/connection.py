"""The buffer file: its path, the process lock, PRAGMAs, and one transaction at a time.

Concurrency: one connection, guarded by one lock, does every write (SQLite allows one
writer at a time anyway; a Python lock avoids SQLITE_BUSY spins). Readers that scan
(export, status) open their own connection and see a WAL snapshot. Every ``sqlite3.Error``
leaves this package translated into an edgebuf error that says what to do (``translate``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from edgebuf.clock import Clock, SystemClock
from edgebuf.errors import BufferCorruptError, ConfigError, DiskFullError, StorageError
from edgebuf.store.schema import migrate

log = logging.getLogger("edgebuf.store")

# SQLite's primary result codes (sqlite3.h). The ``sqlite3`` module names them, and gives
# errors a ``sqlite_errorcode``, only from Python 3.11; on 3.10 the message tells them apart.
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_CORRUPT_CODES = {_SQLITE_CORRUPT, _SQLITE_NOTADB}
_MESSAGES = {  # sqlite3_errstr() of each code, what Python 3.10 puts in the exception
    "database or disk is full": _SQLITE_FULL,
    "database disk image is malformed": _SQLITE_CORRUPT,
    "file is not a database": _SQLITE_NOTADB,
}


def _primary_code(exc: sqlite3.Error) -> int | None:
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    return _MESSAGES.get(str(exc))


def translate(exc: sqlite3.Error, doing: str) -> StorageError:
    """Turn a raw sqlite3 error into an edgebuf error that says what to do."""
    primary = _primary_code(exc)
    if primary == _SQLITE_FULL:
        return DiskFullError(
            f"cannot {doing}: the disk holding the buffer is full ({exc}). Nothing of this "
            "call was stored and nothing buffered was lost; logging resumes when space is freed."
        )
    if primary in _CORRUPT_CODES:
        return BufferCorruptError(
            f"cannot {doing}: the buffer file is damaged ({exc}); run `edgebuf repair`"
        )
    return StorageError(f"cannot {doing}: {exc}")


_held_here: dict[str, int] = {}  # lock file (real path) -> fd, for locks this process holds
_held_lock = threading.Lock()


def acquire_process_lock(db_path: str | os.PathLike[str]) -> int:
    """Take the advisory lock ``<db>.lock`` (released by ``release_process_lock``, or when
    the process dies). One holder per buffer: another process, or another client of this
    one, is refused with a message that says which."""
    lock_path = os.path.realpath(f"{db_path}.lock")
    with _held_lock:
        if lock_path in _held_here:
            raise StorageError(
                f"the buffer {db_path} is already open in this process (another client or "
                "repair holds it, e.g. from an earlier notebook cell): close that client first "
                "(client.close()), or reuse it"
            )
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StorageError(
                f"the buffer {db_path} is in use by another edgebuf process; one client per buffer"
            ) from None
        _held_here[lock_path] = fd
    return fd


def abandon_process_lock(db_path: str | os.PathLike[str]) -> None:
    """For simulations: drop this process's lock on ``db_path`` the way the kernel does for
    a process that died; the holder's objects are left as they are (never closed)."""
    lock_path = os.path.realpath(f"{db_path}.lock")
    with _held_lock:
        fd = _held_here.pop(lock_path, None)
    if fd is not None:
        os.close(fd)


def release_process_lock(fd: int) -> None:
    """Release a lock taken by ``acquire_process_lock`` (closing the fd drops the flock)."""
    with _held_lock:
        for path, held in list(_held_here.items()):
            if held == fd:
                del _held_here[path]
        os.close(fd)


class StoreConnection:
    """One SQLite file opened for writing: lock, PRAGMAs, schema, transactions, close.

    ``exclusive=True`` (what the client uses) takes an advisory lock on ``<db>.lock`` so two
    processes never ship from one buffer. Tools that only read or make short edits (CLI
    status, cleanup) pass ``exclusive=False``.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        clock: Clock | None = None,
        exclusive: bool = True,
    ) -> None:
        self.path = Path(db_path)
        self.clock: Clock = clock or SystemClock()
        self.durability = durability
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._ckpt_conn: sqlite3.Connection | None = None
        self._commits = 0  # a hint for the checkpoint timer, not data
        self._commits_at_checkpoint = 0
        self._closed = False
        self._exclusive = exclusive
        self._prepare_path()
        if exclusive:
            self._take_process_lock()
        try:
            self._conn = self._connect()
            with self._tx() as conn:
                migrate(conn, self.path)
        except sqlite3.Error as exc:
            self._release_process_lock()
            raise translate(exc, f"open the buffer {self.path}") from exc
        except BaseException:
            self._release_process_lock()
            raise

    # ------------------------------------------------------------------ opening
    def _prepare_path(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not self.path.exists():
                # Owner-only: predictions can be sensitive production data.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            if not os.access(self.path, os.R_OK | os.W_OK) or not os.access(
                self.path.parent, os.W_OK
            ):
                raise PermissionError(f"{self.path} (or its folder) is not writable")
        except OSError as exc:
            raise ConfigError(f"db_path {str(self.path)!r} cannot be used: {exc}") from None

    def _take_process_lock(self) -> None:
        self._lock_fd = acquire_process_lock(self.path)

    def _release_process_lock(self) -> None:
        if self._lock_fd is not None:
            release_process_lock(self._lock_fd)
            self._lock_fd = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA busy_timeout=30000")
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only effective before tables exist
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"could not switch {self.path} to WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
        return conn

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the writer lock; rolled back on any error."""
        with self._lock:
            if self._closed:
                raise StorageError("the buffer is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                    self._commits += 1
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise

    @contextlib.contextmanager
    def _storage_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, doing) from exc

    def read_connection(self) -> sqlite3.Connection:
        """A separate read-only connection for scans (export, status) that must not block writes."""
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _before_close(self) -> None:
        """Hook for the layers above: runs under the writer lock just before closing."""

    def close(self) -> None:
        """Close the connection and release the process lock. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self._before_close()
            finally:
                self._closed = True
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA optimize")
                if self._ckpt_conn is not None:
                    self._ckpt_conn.close()
                self._conn.close()
                self._release_process_lock()

    @property
    def closed(self) -> bool:
        return self._closed
