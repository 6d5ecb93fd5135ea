"""LocalBufferManager: the SQLite buffer, the single source of truth of the edge.

One class, composed of one concept per module: the file and its transactions
(``connection``), the counters (``counters``), the queue of records (``queue``), status
reads and maintenance (``maintenance``), what the cloud confirmed holding
(``confirmation``). A ``log_prediction`` commit writes the row alone;
the counters catch up in ``fold`` and readers add the rows not yet folded, so every count
is exact at every instant, crash or not.
"""

from __future__ import annotations

import os

from edgebuf.clock import Clock
from edgebuf.store.confirmation import Confirmation
from edgebuf.store.connection import StoreConnection, acquire_process_lock, translate
from edgebuf.store.counters import effective_metadata
from edgebuf.store.queue import Batch, BufferedRecord, Queue

__all__ = [
    "Batch",
    "BufferedRecord",
    "LocalBufferManager",
    "StoreConnection",
    "acquire_process_lock",
    "effective_metadata",
    "translate",
]


class LocalBufferManager(Queue, Confirmation):
    """The durable prediction buffer in one SQLite file.

    ``exclusive=True`` (what the client uses) takes an advisory lock on ``<db>.lock`` so two
    processes never ship from one buffer; it also resets rows left ``sending`` by a crash.
    Tools that only read or make short edits (CLI status, cleanup) pass ``exclusive=False``.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        clock: Clock | None = None,
        exclusive: bool = True,
    ) -> None:
        # Only an exclusive store may remember what it wrote: no other process inserts.
        self._last_seq: dict[str, int] = {}  # device -> last sequence number committed
        self._live_upper: int | None = None  # live_bytes is at most this (None: unknown)
        self._orphaned: set[str] = set()  # claims whose rows could not be released yet
        super().__init__(db_path, durability=durability, clock=clock, exclusive=exclusive)
        try:
            self.recovered_in_flight = self.reset_in_flight() if exclusive else 0
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> LocalBufferManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
