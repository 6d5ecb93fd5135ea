"""The disk-full procedure: what the client does when SQLite reports a full disk.

On a full disk even a DELETE needs room (SQLite appends the change to the WAL first), so
the client gives up its ballast (``DiskReserve``), truncates the WAL, deletes delivered
rows in tight steps, hands freed pages back, truncates again, and retries the write once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edgebuf.errors import StorageError
from edgebuf.space.capacity import CapacityManager
from edgebuf.space.reserve import DiskReserve
from edgebuf.store import LocalBufferManager

log = logging.getLogger("edgebuf.space.diskfull")


class DiskFullProcedure:
    """Frees space for a write that failed with ``DiskFullError``; one run at a time."""

    def __init__(
        self, store: LocalBufferManager, capacity: CapacityManager, reserve: DiskReserve
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.reserve = reserve
        self.lock = threading.Lock()

    def free(self) -> bool:
        """Give up the reserve, truncate the WAL, delete delivered rows; True if anything
        was freed. Each step may fail on its own (the disk is full); the next still runs."""
        freed = self.reserve.release()
        steps: tuple[Callable[[], object], ...] = (
            lambda: self.store.checkpoint("TRUNCATE"),
            self.capacity.delete_all_sent,
            lambda: self.store.incremental_vacuum(),
            lambda: self.store.checkpoint("TRUNCATE"),
        )
        with self.lock:
            for step in steps:
                try:
                    result = step()
                except StorageError as exc:
                    log.warning("disk full: a clean-up step failed: %s", exc)
                    continue
                if isinstance(result, int) and result:
                    freed = True
                    log.warning("disk full: deleted %d delivered records", result)
        self.reserve.ensure()  # re-arm for the next time, if the deletes made room
        return freed
