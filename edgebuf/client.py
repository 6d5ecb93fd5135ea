"""EnhancedAsyncLoggingClient: the edge's one entry point, and the composition root.

``log_prediction`` validates, commits the record to SQLite (WAL) and returns its record
id; only then does the shipping thread learn about it. There is no in-memory stage in
front of the disk, so a record whose call returned survives the process being killed.

Concurrency model: plain threads sleeping on Events (a shipping thread and a
connectivity thread). Every public method is synchronous and safe to call from several
threads; asyncio code uses the ``a``-prefixed twins (``alog_prediction``, ``aflush``,
``aclose``, ``async with``), which never block the event loop on the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgebuf.aio import AsyncSurface
from edgebuf.clock import Clock, SystemClock
from edgebuf.config import EdgeSettings, load_settings, ssl_context
from edgebuf.delivery.connectivity import ConnectivityMonitor
from edgebuf.delivery.reconcile import Reconciler, WatermarkSource
from edgebuf.delivery.recovery import BufferRecoveryManager
from edgebuf.delivery.sender import Sender
from edgebuf.delivery.shipper import ShippingLoop
from edgebuf.delivery.state import DeliveryState, FaultLog
from edgebuf.delivery.transport import Transport
from edgebuf.errors import BufferFullError, ClientClosedError, DiskFullError
from edgebuf.records import NewRecord, prepare_record, prepare_records
from edgebuf.space.capacity import CapacityManager
from edgebuf.space.diskfull import DiskFullProcedure
from edgebuf.space.reserve import DiskReserve
from edgebuf.status import buffer_status
from edgebuf.store.repair import open_buffer
from edgebuf.syncer import WalSyncer

if TYPE_CHECKING:
    from edgebuf.ops.monitor import BufferMonitor

log = logging.getLogger("edgebuf.client")

ConnectivityCallback = Callable[[str, str], None]


def _http_transport(s: EdgeSettings, tls: ssl.SSLContext | None, faults: FaultLog) -> Transport:
    from edgebuf.delivery.http import HttpTransport  # httpx is loaded when first needed

    return HttpTransport(
        s.endpoint,
        api_key=s.api_key,
        request_timeout=s.request_timeout,
        health_timeout=s.health_timeout,
        compression=s.wire_compression,
        max_connections=s.drain_concurrency + 2,
        tls=tls,
        faults=faults,
    )


class EnhancedAsyncLoggingClient(AsyncSurface):
    """Buffer every prediction on disk first, ship batches to the cloud, never lose one.

    Every setting is a keyword argument here; one not given is read from the environment
    (``CLOUD_LOGGING_ENDPOINT``, ``BUFFER_DB_PATH``, ``DEVICE_ID``, ``EDGEBUF_<NAME>``), else
    the design's default (see ``edgebuf.config.EdgeSettings`` and the README's table).
    ``settings`` passes a whole ``EdgeSettings`` instead. ``transport``, ``clock`` and
    ``rng`` are seams for tests and simulations. Invalid settings raise ``ConfigError`` here.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        db_path: str | Path | None = None,
        device_id: str | None = None,
        *,
        api_key: str | None = None,
        ca_bundle: str | Path | None = None,
        client_cert: str | Path | None = None,
        client_key: str | Path | None = None,
        batch_size: int | None = None,
        batch_timeout: float | None = None,
        backfill_batch_size: int | None = None,
        drain_concurrency: int | None = None,
        drain_adaptive: bool | None = None,
        monitor_interval: float | None = None,
        health_timeout: float | None = None,
        request_timeout: float | None = None,
        max_retries: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        cleanup_after_days: float | None = None,
        capacity_bytes: int | None = None,
        durability: Literal["normal", "full"] | None = None,
        overflow_policy: Literal["evict", "reject"] | None = None,
        max_record_bytes: int | None = None,
        gzip: bool | None = None,
        compression: Literal["zstd", "gzip", "none"] | None = None,
        reserve_bytes: int | None = None,
        auto_repair: bool | None = None,
        verify_on_start: bool | None = None,
        reconcile_interval: float | None = None,
        sync_interval: float | None = None,
        settings: EdgeSettings | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_connectivity_change: ConnectivityCallback | None = None,
    ) -> None:
        if settings is None:  # every keyword above that names a setting, as given
            named = EdgeSettings.model_fields
            settings = load_settings(**{k: v for k, v in locals().items() if k in named})
        self.settings = s = settings
        tls = ssl_context(s)  # a bad certificate, key or CA file is a ConfigError now
        self.device_id = s.device_id
        self.clock: Clock = clock or SystemClock()
        self.faults = FaultLog(self.clock)
        rng = rng or random.Random()
        with contextlib.ExitStack() as undo:  # a failure below closes what was opened
            self.store, self.repair_report = open_buffer(
                s.db_path,
                durability=s.durability,
                clock=self.clock,
                verify=s.verify_on_start,
                auto_repair=s.auto_repair,
            )
            undo.callback(self.store.close)
            self.reserve = DiskReserve(s.db_path, s.reserve_bytes)
            self.reserve.ensure()
            self.transport: Transport = transport or _http_transport(s, tls, self.faults)
            undo.callback(self.transport.close)
            self.reconciler = (
                Reconciler(self.store, self.transport, self.clock, interval=s.reconcile_interval)
                if s.reconcile_interval > 0 and isinstance(self.transport, WatermarkSource)
                else None
            )
            self.capacity = CapacityManager(
                self.store,
                capacity_bytes=s.capacity_bytes,
                cleanup_after_days=s.cleanup_after_days,
                overflow_policy=s.overflow_policy,
                require_confirmation=self.reconciler is not None,
            )
            self.disk_full = DiskFullProcedure(self.store, self.capacity, self.reserve)
            self.sender = Sender(self.store, self.transport, self.clock, faults=self.faults)
            self.recovery = BufferRecoveryManager(
                self.store,
                self.sender,
                self.clock,
                batch_size=s.backfill_batch_size,
                concurrency=s.drain_concurrency,
                adaptive=s.drain_adaptive,
            )
            self.connectivity = ConnectivityMonitor(
                self.transport, self.clock, interval=s.monitor_interval, rng=rng
            )
            self.shipper = ShippingLoop(
                self.sender,
                self.recovery,
                self.connectivity,
                self.capacity,
                self.clock,
                batch_size=s.batch_size,
                batch_timeout=s.batch_timeout,
                max_retries=s.max_retries,
                backoff_base=s.backoff_base,
                backoff_cap=s.backoff_cap,
                rng=rng,
                reconciler=self.reconciler,
                disk_full=self.disk_full,
                live_cap=s.backfill_batch_size,
            )
            # normal mode: committed records reach the disk within sync_interval (full: at once)
            self.syncer = (
                WalSyncer(s.db_path, self.clock, s.sync_interval)
                if s.durability == "normal"
                else None
            )
            self.recovery.on_answer = self.shipper.wake  # a backlog answer is ready to settle
            # Restored (or first seen up): the loop drains whatever the buffer holds.
            self.connectivity.add_callback(lambda _old, _new: self.shipper.wake())
            if on_connectivity_change is not None:
                self.connectivity.add_callback(on_connectivity_change)
            undo.pop_all()
        self._state_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._poll = threading.Event()  # never set: an interruptible sleep for flush polling

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EnhancedAsyncLoggingClient:
        """Start the shipping and connectivity threads; drain any backlog found on disk."""
        with self._state_lock:
            if self._closed:
                raise ClientClosedError("the client is closed")
            if self._started:
                return self
            self._started = True
        # The shipping thread now checkpoints every second off the hot path; SQLite's own
        # checkpoint stays as a backstop at a larger WAL size (it runs inside a COMMIT).
        self.store.set_autocheckpoint(10_000)
        self.shipper.start()
        self.connectivity.start()
        if self.syncer is not None:
            self.syncer.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting records, try one bounded final flush, stop threads, close.

        Whatever was not acknowledged stays ``pending`` on disk for the next start.
        Idempotent; never takes much longer than ``timeout`` seconds. Every step runs even
        if an earlier one fails (the first error is raised at the end), so threads never
        outlive a close and the buffer's lock is always released.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        deadline = self.clock.monotonic() + timeout
        with contextlib.ExitStack() as steps:  # run in reverse order of registration
            steps.callback(self.store.close)
            if self.syncer is not None:
                steps.callback(self.syncer.stop)
            steps.callback(self.transport.close)
            steps.callback(  # backlog requests in flight settle, within the deadline
                lambda: self.recovery.close(timeout=max(0.1, deadline - self.clock.monotonic()))
            )
            if started:
                steps.callback(
                    lambda: self.shipper.stop(timeout=max(0.1, deadline - self.clock.monotonic()))
                )
                steps.callback(self.connectivity.stop, timeout=1.0)
                if not self.connectivity.is_down:
                    self._wait_delivered(max(0.0, timeout / 2), deadline)

    def __enter__(self) -> EnhancedAsyncLoggingClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ logging
    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the client is closed; records can no longer be logged")

    def _insert(self, records: list[NewRecord]) -> list[str]:
        return self.store.add_predictions(
            self.device_id,
            records,
            before_commit=self.capacity.make_room,
            capacity_bytes=self.capacity.capacity_bytes,
        )

    def _commit(self, records: list[NewRecord]) -> list[str]:
        try:
            try:
                ids = self._insert(records)
            except DiskFullError:
                self.disk_full.free()
                ids = self._insert(records)  # once; a second DiskFullError goes to the caller
        except BufferFullError:
            self.store.count_rejected_call()
            raise
        self.shipper.notify_new(len(ids))
        if self.syncer is not None:
            self.syncer.note_commit()
        return ids

    def log_prediction(
        self,
        prediction: Mapping[str, Any],
        image_id: str | None = None,
        model_version: str | None = None,
        *,
        timestamp: float | None = None,
        priority: int | None = None,
    ) -> str:
        """Validate and commit one prediction; return its record id.

        When this returns the record is committed to the SQLite buffer and survives a crash
        of this process. ``timestamp`` is epoch seconds (or an aware datetime), default now.
        ``priority`` ranks records for the overflow policy (default: 0 for a frame whose
        ``detections`` list is empty, else 1). Raises ``InvalidRecordError`` /
        ``RecordTypeError`` for bad input, ``DiskFullError`` / ``BufferFullError`` when there
        is no room; in every error case nothing of the call is stored.
        """
        self._check_open()
        record = prepare_record(
            prediction,
            image_id=image_id,
            timestamp=timestamp,
            model_version=model_version,
            priority=priority,
            now=self.clock.time(),
            max_bytes=self.settings.max_record_bytes,
        )
        return self._commit([record])[0]

    def log_predictions(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """Commit many predictions in one transaction (all or none).

        Each item is a dict with key ``prediction`` and optional ``image_id``,
        ``model_version``, ``timestamp``, ``priority``.
        """
        self._check_open()
        return self._commit(
            prepare_records(
                records, now=self.clock.time(), max_bytes=self.settings.max_record_bytes
            )
        )

    # ------------------------------------------------------------------ delivery
    def _wait_delivered(self, timeout: float, deadline: float | None = None) -> bool:
        end = self.clock.monotonic() + timeout
        if deadline is not None:
            end = min(end, deadline)
        self.shipper.request_flush()
        while True:
            if not self.store.has_unsent():
                return True
            remaining = end - self.clock.monotonic()
            if remaining <= 0:
                return False
            if self.connectivity.is_down:
                self.connectivity.request_probe()
            self.clock.wait(self._poll, min(0.05, remaining))

    def flush(self, timeout: float = 30.0) -> bool:
        """Send everything pending now; True once nothing is pending or in flight.

        Returns False if ``timeout`` passes first (for example, the cloud is down); the
        records stay safely on disk either way. ``timeout`` is on the client's clock.
        """
        self._check_open()
        if not self._started:
            self.start()
        return self._wait_delivered(timeout)

    def cleanup(self, older_than_days: float | None = None) -> dict[str, int]:
        """Delete sent rows older than ``cleanup_after_days`` now and reclaim their space.

        On a full disk the reserve is given up first so the deletes can commit."""
        try:
            return self.capacity.cleanup(older_than_days)
        except DiskFullError:
            log.warning("disk full during cleanup: retrying in small steps")
            self.reserve.release()
            with contextlib.suppress(DiskFullError):
                self.store.checkpoint("TRUNCATE")
            return self.capacity.cleanup(older_than_days, tight=True)

    def requeue_failed(self) -> int:
        """Put every dead-lettered record back to pending and start sending it."""
        n = self.store.requeue_failed()
        self.shipper.wake()
        return n

    # ------------------------------------------------------------------ status
    def delivery_state(self) -> DeliveryState:
        """A read-only snapshot of connectivity and delivery (what only a running client knows)."""
        stats = self.sender.stats
        return DeliveryState(
            endpoint=self.settings.endpoint,
            connectivity=self.connectivity.state,
            last_probe_at=self.connectivity.last_probe_at,
            last_change_at=self.connectivity.last_change_at,
            last_success_at=stats.last_success,
            last_error=stats.last_error,
            last_error_at=stats.last_error_at,
            send_rate_per_s=stats.send_rate(),
            recovering=self.recovery.active,
            consecutive_failures=self.shipper.failures,
            last_reconciliation_at=self.reconciler.last_run_at if self.reconciler else None,
            last_reconciliation=(
                dataclasses.asdict(self.reconciler.last)
                if self.reconciler and self.reconciler.last
                else None
            ),
            fault=self.faults.current,
        )

    def get_buffer_status(self) -> dict[str, Any]:
        """The full status (see ``BufferMonitor.get_full_status``)."""
        return buffer_status(
            self.store,
            capacity_bytes=self.settings.capacity_bytes,
            device_id=self.device_id,
            delivery=self.delivery_state(),
        )

    @property
    def monitor(self) -> BufferMonitor:
        """A ``BufferMonitor`` (status, pandas export, repair) bound to this client."""
        # The facade's one upward reference: ops builds on the core, so it is imported on
        # use (``import edgebuf`` loads no pandas); tests/test_architecture.py allows it.
        from edgebuf.ops.monitor import BufferMonitor

        return BufferMonitor(self.store, client=self)
