"""The power-loss window of ``durability="normal"``: committed records reach stable storage
at most ``sync_interval`` seconds after their commit, cloud up or down.

Under ``synchronous=NORMAL`` SQLite syncs the WAL only at a checkpoint; ``log_prediction``
returns once its frames are in the page cache. ``WalSyncer`` has a thread of its own (not
the shipping thread, which can sit in an HTTP request for ``request_timeout`` while the
cloud hangs): when commits are waiting and the oldest has waited ``sync_interval``, it
fsyncs the WAL file through a descriptor of its own (on Linux an fsync
of any descriptor of a file writes that file's dirty pages), and the directory once per WAL
file, so the WAL's name is durable too. No lock is taken and ``log_prediction`` gains no
fsync; a record committed while the fsync runs is covered by the next one. An fsync caught
mid-transaction is harmless: SQLite's recovery keeps only frames up to the last complete
commit, so the durable state is always a prefix of what was committed.

``note_commit`` is the hot path's part: one attribute test per commit, and a wake-up of the
thread only for the first commit after a sync, so an idle client's thread sleeps. ``run``
and ``due_in`` are the policy, driven directly by tests on a fake clock.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from edgebuf.clock import Clock

log = logging.getLogger("edgebuf.syncer")


class WalSyncer:
    """fsync the buffer's WAL at most ``interval`` seconds after a commit."""

    def __init__(self, db_path: str | os.PathLike[str], clock: Clock, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"sync_interval must be > 0, got {interval!r}")
        self.db_path = Path(db_path)
        self.wal_path = Path(f"{db_path}-wal")
        self.clock = clock
        self.interval = interval
        self.syncs = 0
        self._lock = threading.Lock()
        self._first_unsynced: float | None = None  # monotonic time of the oldest unsynced commit
        self._dir_synced_for: tuple[int, int] | None = None  # (st_dev, st_ino) of the WAL
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note_commit(self) -> bool:
        """A commit returned; True when the shipping thread must be woken to sync it."""
        if self._first_unsynced is not None:
            return False
        with self._lock:
            if self._first_unsynced is not None:
                return False
            self._first_unsynced = self.clock.monotonic()
        self._wake.set()
        return True

    def due_in(self, now: float) -> float | None:
        """Seconds until the next sync is due (0: now), or None when nothing waits."""
        first = self._first_unsynced
        return None if first is None else max(0.0, first + self.interval - now)

    def run(self, now: float) -> bool:
        """Sync if due; True when it did."""
        due = self.due_in(now)
        if due is None or due > 0:
            return False
        with self._lock:
            self._first_unsynced = None  # commits from now on wait for the next sync
        self.sync()
        return True

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgebuf-syncer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set():
                due = self.due_in(self.clock.monotonic())
                if due is None:
                    break
                if due > 0:
                    self._stop.wait(due)
                    continue
                self.run(self.clock.monotonic())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread after a last sync of what is waiting (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._first_unsynced is not None:
            self._first_unsynced = None
            self.sync()

    def sync(self) -> None:
        """fsync the WAL now (and its directory, once per WAL file)."""
        try:
            fd = os.open(self.wal_path, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL (closed, or never written): nothing is waiting in it
        except OSError as exc:
            log.warning("cannot open %s to sync it: %s", self.wal_path, exc)
            return
        try:
            os.fsync(fd)
            st = os.fstat(fd)
        except OSError as exc:
            log.warning("fsync of %s failed: %s", self.wal_path, exc)
            return
        finally:
            os.close(fd)
        self.syncs += 1
        if self._dir_synced_for != (st.st_dev, st.st_ino):
            try:
                dfd = os.open(self.wal_path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                self._dir_synced_for = (st.st_dev, st.st_ino)
            except OSError as exc:
                log.warning("fsync of %s failed: %s", self.wal_path.parent, exc)
