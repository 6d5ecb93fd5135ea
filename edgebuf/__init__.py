"""edgebuf: every edge prediction reaches the cloud, through outages, crashes and full disks.

Persist first (SQLite, WAL), ship in batches over HTTP, retry with backoff, drain the
backlog when the cloud returns; the cloud de-duplicates by record id.
"""

from edgebuf.client import EnhancedAsyncLoggingClient
from edgebuf.clock import Clock, FakeClock, SystemClock
from edgebuf.config import EdgeSettings
from edgebuf.delivery.connectivity import ConnectivityMonitor
from edgebuf.errors import (
    BufferCorruptError,
    BufferFullError,
    ClientClosedError,
    ConfigError,
    DiskFullError,
    EdgebufError,
    InvalidRecordError,
    RecordTypeError,
    StorageError,
)
from edgebuf.ops.monitor import BufferMonitor, StatsExport
from edgebuf.delivery.recovery import BufferRecoveryManager
from edgebuf.store.schema import Status
from edgebuf.store import LocalBufferManager
from edgebuf.delivery.transport import HttpTransport, SendResult, Transport

__version__ = "0.1.0"

__all__ = [
    "BufferCorruptError",
    "BufferFullError",
    "BufferMonitor",
    "BufferRecoveryManager",
    "ClientClosedError",
    "Clock",
    "ConfigError",
    "ConnectivityMonitor",
    "DiskFullError",
    "EdgeSettings",
    "EdgebufError",
    "EnhancedAsyncLoggingClient",
    "FakeClock",
    "HttpTransport",
    "InvalidRecordError",
    "LocalBufferManager",
    "RecordTypeError",
    "SendResult",
    "StatsExport",
    "Status",
    "StorageError",
    "SystemClock",
    "Transport",
    "__version__",
]
