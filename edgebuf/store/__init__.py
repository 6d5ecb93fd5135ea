"""The SQLite buffer: the edge's single source of truth.

``LocalBufferManager`` (``manager``) is composed of one concept per module: the file, its
lock and transactions (``connection``), the schema and its migrations (``schema``), the
counters folded in after each commit (``counters``), the queue of records (``queue``:
insert, claim, settle), status reads and maintenance (``maintenance``), and the salvage of a
damaged file (``salvage``). Every other part of edgebuf reaches the database through the
named methods of ``LocalBufferManager``; nothing outside this package runs SQL.
"""

from edgebuf.store.manager import (
    Batch,
    BufferedRecord,
    LocalBufferManager,
    acquire_process_lock,
    effective_metadata,
    translate,
)
from edgebuf.store.schema import Status

__all__ = [
    "Batch",
    "BufferedRecord",
    "LocalBufferManager",
    "Status",
    "acquire_process_lock",
    "effective_metadata",
    "translate",
]
