"""EnhancedAsyncLoggingClient: the edge's one entry point.

``log_prediction`` validates, commits the record to SQLite (WAL) and returns its record
id; only then does the shipping thread learn about it. There is no in-memory stage in
front of the disk, so a record whose call returned survives the process being killed.

Concurrency model: plain threads sleeping on Events (a shipping thread and a
connectivity thread). Every public method is synchronous and safe to call from several
threads; from asyncio code, ``log_prediction`` blocks the loop for one local SQLite
commit, and the calls that wait (``flush``, ``close``) belong in ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgebuf.capacity import CapacityManager
from edgebuf.clock import Clock, SystemClock
from edgebuf.config import EdgeSettings, load_settings
from edgebuf.connectivity import DOWN, UP, ConnectivityMonitor
from edgebuf.diskspace import DiskReserve
from edgebuf.errors import (
    BufferCorruptError,
    BufferFullError,
    ClientClosedError,
    DiskFullError,
    StorageError,
)
from edgebuf.records import NewRecord, prepare_record, prepare_records
from edgebuf.recovery import BufferRecoveryManager
from edgebuf.sender import Sender
from edgebuf.shipper import ShippingLoop
from edgebuf.store import LocalBufferManager
from edgebuf.syncer import WalSyncer
from edgebuf.transport import HttpTransport, Transport

log = logging.getLogger("edgebuf.client")


class EnhancedAsyncLoggingClient:
    """Buffer every prediction on disk first, ship batches to the cloud, never lose one.

    Keyword arguments override environment variables (``CLOUD_LOGGING_ENDPOINT``,
    ``BUFFER_DB_PATH``, ``DEVICE_ID``, ``EDGEBUF_*``), which override the design's defaults;
    see ``edgebuf.config.EdgeSettings``. ``transport``, ``clock`` and ``rng`` are seams for
    tests and simulations. Invalid settings raise ``ConfigError`` here, not later.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        db_path: str | Path | None = None,
        device_id: str | None = None,
        *,
        batch_size: int | None = None,
        batch_timeout: float | None = None,
        monitor_interval: float | None = None,
        health_timeout: float | None = None,
        request_timeout: float | None = None,
        max_retries: int | None = None,
        cleanup_after_days: float | None = None,
        sync_interval: float | None = None,
        settings: EdgeSettings | None = None,
        transport: Transport | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_connectivity_change=None,
        **more: Any,
    ) -> None:
        if settings is None:
            settings = load_settings(
                endpoint=endpoint,
                db_path=db_path,
                device_id=device_id,
                batch_size=batch_size,
                batch_timeout=batch_timeout,
                monitor_interval=monitor_interval,
                health_timeout=health_timeout,
                request_timeout=request_timeout,
                max_retries=max_retries,
                cleanup_after_days=cleanup_after_days,
                sync_interval=sync_interval,
                **more,
            )
        self.settings = s = settings
        self.device_id = s.device_id
        self.clock = clock or SystemClock()
        rng = rng or random.Random()
        self.store = self._open_store(s)
        self.reserve = DiskReserve(s.db_path, s.reserve_bytes)
        self.reserve.ensure()
        try:
            self.transport = transport or HttpTransport(
                s.endpoint,
                api_key=s.api_key,
                request_timeout=s.request_timeout,
                health_timeout=s.health_timeout,
                use_gzip=s.gzip,
            )
        except Exception:
            self.store.close()
            raise
        self.capacity = CapacityManager(
            self.store,
            capacity_bytes=s.capacity_bytes,
            cleanup_after_days=s.cleanup_after_days,
            overflow_policy=s.overflow_policy,
        )
        self.sender = Sender(self.store, self.transport, self.clock)
        self.recovery = BufferRecoveryManager(
            self.store,
            self.sender,
            self.clock,
            batch_size=s.backfill_batch_size,
            concurrency=s.drain_concurrency,
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
        )
        # normal mode: committed records reach the disk within sync_interval (full: at once)
        self.syncer = (
            WalSyncer(s.db_path, self.clock, s.sync_interval) if s.durability == "normal" else None
        )
        self.recovery.on_start = self.shipper.wake
        self.connectivity.add_callback(self._on_connectivity)
        if on_connectivity_change is not None:
            self.connectivity.add_callback(on_connectivity_change)
        self._state_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._poll = threading.Event()  # never set: an interruptible sleep for flush polling
        self._maintenance_lock = threading.Lock()
        self.repair_report: dict | None = getattr(self, "repair_report", None)

    def _open_store(self, s: EdgeSettings) -> LocalBufferManager:
        """Open the buffer; a damaged file is set aside and salvaged (``auto_repair``) so a
        corrupt buffer never stops the camera from logging (no crash loop at start-up)."""
        try:
            store = LocalBufferManager(s.db_path, durability=s.durability, clock=self.clock)
            if s.verify_on_start:
                try:
                    store.verify()
                except BufferCorruptError:
                    store.close()
                    raise
            return store
        except BufferCorruptError:
            if not s.auto_repair:
                raise
        from edgebuf.monitor import repair_db

        report = repair_db(s.db_path)
        log.error("buffer %s was damaged and has been repaired: %s", s.db_path, report)
        self.repair_report = report
        return LocalBufferManager(s.db_path, durability=s.durability, clock=self.clock)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EnhancedAsyncLoggingClient:
        """Start the shipping and connectivity threads; drain any backlog found on disk."""
        with self._state_lock:
            if self._closed:
                raise ClientClosedError("the client is closed")
            if self._started:
                return self
            self._started = True
        if self.store.count_pending(at_most=1):
            self.recovery.start_recovery()  # "load on startup"
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
        Idempotent; never takes much longer than ``timeout`` seconds.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        deadline = self.clock.monotonic() + timeout
        if started:
            if not self.connectivity.is_down:
                self._wait_delivered(max(0.0, timeout / 2), deadline)
            self.connectivity.stop(timeout=1.0)
            self.shipper.stop(timeout=max(0.1, deadline - self.clock.monotonic()))
        if self.syncer is not None:
            self.syncer.stop()
        self.recovery.close()
        self.transport.close()
        self.store.close()

    def __enter__(self) -> EnhancedAsyncLoggingClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connectivity(self, old: str, new: str) -> None:
        # Restored (or first seen up with a backlog on disk): drain what waited.
        if new == UP and (old == DOWN or self.store.count_pending(at_most=1)):
            self.recovery.start_recovery()
        self.shipper.wake()

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

    def _free_disk(self) -> bool:
        """Disk full: give up the reserve, truncate the WAL, delete delivered rows."""
        freed = self.reserve.release()
        with self._maintenance_lock:
            for step in (
                lambda: self.store.checkpoint("TRUNCATE"),
                self.capacity.delete_all_sent,
                lambda: self.store.incremental_vacuum(),
                lambda: self.store.checkpoint("TRUNCATE"),
            ):
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

    def _commit(self, records: list[NewRecord]) -> list[str]:
        try:
            try:
                ids = self._insert(records)
            except DiskFullError:
                self._free_disk()
                ids = self._insert(records)  # once; a second DiskFullError goes to the caller
        except BufferFullError:
            self.store.execute_write(
                "UPDATE buffer_metadata SET value = value + 1 WHERE key = 'rejected_full'"
            )
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
        if self.store.count_pending(at_most=1):
            self.recovery.start_recovery()
        while True:
            if not self.store.has_unsent():
                return True
            remaining = end - self.clock.monotonic()
            if remaining <= 0:
                return False
            if self.connectivity.is_down:
                self.connectivity.request_probe()
            self._poll.wait(min(0.05, remaining))

    def flush(self, timeout: float = 30.0) -> bool:
        """Send everything pending now; True once nothing is pending or in flight.

        Returns False if ``timeout`` passes first (for example, the cloud is down); the
        records stay safely on disk either way.
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
            with contextlib.suppress(StorageError):
                self.store.checkpoint("TRUNCATE")
            return self.capacity.cleanup(older_than_days, tight=True)

    def requeue_failed(self) -> int:
        """Put every dead-lettered record back to pending and start sending it."""
        n = self.store.requeue_failed()
        if n:
            self.recovery.start_recovery()
        return n

    def get_buffer_status(self) -> dict[str, Any]:
        """The monitor's full status (see ``BufferMonitor.get_full_status``)."""
        from edgebuf.monitor import BufferMonitor

        return BufferMonitor(self.store, client=self).get_full_status()

    @property
    def monitor(self):
        """A ``BufferMonitor`` bound to this client."""
        from edgebuf.monitor import BufferMonitor

        return BufferMonitor(self.store, client=self)
