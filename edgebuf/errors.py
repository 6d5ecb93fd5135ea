"""The small error tree that public edgebuf calls raise.

Background loops never raise into the host program; they log and carry on.
Public calls raise one of these, so a caller can catch ``EdgebufError`` and
know it came from the buffer, not from a library underneath it.
"""

from __future__ import annotations


class EdgebufError(Exception):
    """Base class of every error edgebuf raises on purpose."""


class ConfigError(EdgebufError, ValueError):
    """A setting is invalid (bad endpoint URL, unwritable ``db_path``, ...)."""


class InvalidRecordError(EdgebufError, ValueError):
    """A prediction cannot be stored as given (not JSON, NaN, too large, too deep).

    Raised before anything is written: nothing of the call is stored.
    """


class RecordTypeError(EdgebufError, TypeError):
    """An argument of ``log_prediction`` has the wrong type. Nothing is stored."""


class StorageError(EdgebufError):
    """The local SQLite buffer could not complete an operation.

    The transaction was rolled back: nothing of the failed call is stored and
    nothing already buffered is lost.
    """


class DiskFullError(StorageError):
    """The filesystem holding the buffer is full. Logging resumes when space returns."""


class BufferFullError(StorageError):
    """The buffer reached its configured capacity and the overflow policy is ``reject``."""


class BufferCorruptError(StorageError):
    """The buffer file is damaged; run ``edgebuf repair`` (``BufferMonitor.repair_db``)."""


class ClientClosedError(EdgebufError, RuntimeError):
    """The client was closed; records can no longer be logged through it."""
