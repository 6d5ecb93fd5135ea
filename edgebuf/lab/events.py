"""``EventLog``: the wall-clock timeline of a drill (outages, kills), shared by its parts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, overload

__all__ = ["EventLog"]


class EventLog(Sequence):
    """A thread-safe timeline of ``{"t": time.time(), "kind": ..., **info}`` dicts.

    The shape ``edgebuf.lab.plots.plot_backlog`` reads: ``outage_start`` / ``outage_end`` pairs
    are shaded, ``edge_killed`` entries drawn as lines. Share one log between a proxy and
    the code that kills processes, so every fault lands on one timeline.
    """

    def __init__(self) -> None:
        self._items: list[dict] = []
        self._lock = threading.Lock()

    def add(self, kind: str, **info: Any) -> dict:
        """Append an event stamped now and return it."""
        event = {"t": time.time(), "kind": kind, **info}
        with self._lock:
            self._items.append(event)
        return event

    def of(self, kind: str) -> list[dict]:
        """Every event of one kind, in order."""
        return [e for e in self if e["kind"] == kind]

    def relative(self, t0: float) -> list[dict]:
        """A copy with ``t`` as seconds since ``t0`` (for tables)."""
        return [{**e, "t": round(e["t"] - t0, 3)} for e in self]

    @overload
    def __getitem__(self, index: int) -> dict: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...
    def __getitem__(self, index):
        with self._lock:
            return self._items[index]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[dict]:
        with self._lock:
            return iter(list(self._items))
