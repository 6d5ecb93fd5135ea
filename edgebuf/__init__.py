"""edgebuf: every edge prediction reaches the cloud, through outages, crashes and full disks.

Persist first (SQLite, WAL), ship in batches over HTTP, retry with backoff, drain the
backlog when the cloud returns; the cloud de-duplicates by record id.

Layers (each a folder): ``store`` (the SQLite buffer), ``delivery`` (transport, sender,
shipping loop, connectivity, recovery), ``space`` (capacity, disk reserve, disk full) form
the core with this package's top-level modules; ``ops`` (monitor, export, CLI), ``service``
(the edge inference service), ``vision`` (the detector) and ``lab`` (drills, faults,
simulations) build on it. ``BufferMonitor`` and ``StatsExport`` live in ``ops`` and are
imported on first use, so ``import edgebuf`` loads no pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuf.client import EnhancedAsyncLoggingClient
from edgebuf.clock import Clock, FakeClock, SystemClock
from edgebuf.config import EdgeSettings
from edgebuf.delivery.connectivity import ConnectivityMonitor
from edgebuf.delivery.recovery import BufferRecoveryManager
from edgebuf.delivery.transport import SendResult, Transport
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
from edgebuf.store import LocalBufferManager
from edgebuf.store.schema import Status

if TYPE_CHECKING:
    from edgebuf.delivery.http import HttpTransport
    from edgebuf.ops.monitor import BufferMonitor, StatsExport

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


def __getattr__(name: str) -> Any:
    # The design's BufferMonitor (and its StatsExport) belong to ops, above the core.
    if name in ("BufferMonitor", "StatsExport"):
        from edgebuf.ops.monitor import BufferMonitor, StatsExport

        return BufferMonitor if name == "BufferMonitor" else StatsExport
    if name == "HttpTransport":  # httpx (and the click it imports) load on first use
        from edgebuf.delivery.http import HttpTransport

        return HttpTransport
    raise AttributeError(f"module 'edgebuf' has no attribute {name!r}")
