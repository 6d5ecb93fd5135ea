"""The shipping loop: decides when to send, on which lane, and how long to back off.

``run_once`` is the whole policy and returns how long to sleep; the thread around it
sleeps on an Event, so ``log_prediction`` can wake it when a batch is ready and an idle
client uses no CPU. Tests drive ``run_once`` with a fake clock and a scripted transport.

Per pass, in order:
1. maintenance when due: the 90% rule (every ``MAINTENANCE_EVERY`` s), cleanup (daily),
   reconciliation with the cloud (every ``reconcile_interval`` s, while it is reachable);
2. nothing is sent while the cloud is marked down (the connectivity monitor wakes us);
3. nothing is sent before a backoff deadline;
4. live lane: ``batch_size`` new records are waiting, or the first of them has waited
   ``batch_timeout`` -> send the newest ``batch_size`` pending rows;
5. backlog lane: when the buffer holds more pending rows than the live lane's next batch
   (an index probe, every pass), or backlog requests are in flight, keep the lane's window
   of oldest-first backfill batches full (``recovery.drain_step``) and settle what it
   hands back.
The loop also wakes at least every ``batch_timeout`` while idle, so rows that another
process put back to pending (``edgebuf requeue-failed``) are picked up without a restart.
After ``max_retries`` consecutive failed attempts the loop marks the cloud down and stops
sending until the connectivity monitor sees it back; rows stay pending the whole time.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from edgebuf.clock import Clock
from edgebuf.delivery.connectivity import ConnectivityMonitor
from edgebuf.delivery.policy import RETRY_AFTER_CAP, backoff_delay
from edgebuf.delivery.reconcile import Reconciler
from edgebuf.delivery.recovery import BufferRecoveryManager
from edgebuf.delivery.sender import Sender, SendOutcome
from edgebuf.errors import DiskFullError
from edgebuf.space.capacity import CapacityManager
from edgebuf.space.diskfull import DiskFullProcedure

log = logging.getLogger("edgebuf.delivery.shipper")

MAINTENANCE_EVERY = 30.0
CHECKPOINT_EVERY = 1.0
CLEANUP_EVERY = 86_400.0
IDLE_WAKE = 300.0


class ShippingLoop:
    """Batching, retry with backoff, and the two delivery lanes, on one thread."""

    def __init__(
        self,
        sender: Sender,
        recovery: BufferRecoveryManager,
        connectivity: ConnectivityMonitor,
        capacity: CapacityManager,
        clock: Clock,
        *,
        batch_size: int = 32,
        batch_timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 2.0,
        backoff_cap: float = 60.0,
        rng: random.Random | None = None,
        on_maintenance: Callable[[], None] | None = None,
        reconciler: Reconciler | None = None,
        disk_full: DiskFullProcedure | None = None,
        live_cap: int | None = None,
    ) -> None:
        self.sender = sender
        self.store = sender.store
        self.recovery = recovery
        self.connectivity = connectivity
        self.capacity = capacity
        self.clock = clock
        self.batch_size = batch_size
        # A live request takes every record logged since the last one, up to this many: when
        # a send takes longer than a batch takes to fill (a busy cloud, a long drain), none
        # of the newest records is left to the tail of the backlog.
        self.live_cap = max(batch_size, live_cap or batch_size)
        self.batch_timeout = batch_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self.on_maintenance = on_maintenance
        self.reconciler = reconciler
        self.disk_full = disk_full
        self._lock = threading.Lock()
        self.new_count = 0  # records logged since the last live claim, at most batch_size
        self.first_new_at: float | None = None
        self.failures = 0  # consecutive failed attempts
        self.backoff_until = 0.0
        self.server_hold_until = 0.0  # a Retry-After: a flush does not cut it short
        self.flush_requested = False
        now = clock.monotonic()
        self.next_maintenance = now
        self.next_checkpoint = now + CHECKPOINT_EVERY
        self.next_cleanup = now + CLEANUP_EVERY
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ signals
    def notify_new(self, n: int) -> None:
        """Called after records are committed: counts them toward the live batch."""
        with self._lock:
            first = self.new_count == 0
            before = self.new_count
            # Beyond live_cap, older records are backlog: the backlog lane (which reads
            # SQLite) sends them, so this count never grows with an outage.
            self.new_count = min(self.live_cap, before + n)
            if first:
                self.first_new_at = self.clock.monotonic()
            # wake only when crossing the threshold: one Event.set per batch, not per record
            ready = self.new_count >= self.batch_size > before
        if first or ready:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def request_flush(self) -> None:
        """Send what is waiting now instead of at the batch timeout; skip our own backoff.

        A server's ``Retry-After`` still holds: the cloud asked for the pause, and cutting
        it short would only draw another 429 and a longer wait."""
        with self._lock:
            self.flush_requested = True
            self.backoff_until = self.server_hold_until
        self._wake.set()

    # ------------------------------------------------------------------ policy
    def _handle(self, outcome: SendOutcome, now: float) -> None:
        if outcome.ok:
            self.failures = 0
            self.backoff_until = self.server_hold_until = 0.0
            if outcome.sent:
                self.connectivity.mark_up()
                self.store.checkpoint_in_background()
            return
        # Released rows are backlog now; the backlog lane picks them up after the backoff.
        self.failures += 1
        retry = outcome.retry
        error = (retry.error if retry else None) or "send failed"
        if retry and retry.retry_after:
            self.server_hold_until = now + min(retry.retry_after, RETRY_AFTER_CAP)
        if self.failures > self.max_retries:
            log.warning(
                "giving up after %d retries (%s); waiting for connectivity", self.max_retries, error
            )
            self.failures = 0
            # A server's Retry-After still holds after the monitor sees /health answer again.
            self.backoff_until = max(now, self.server_hold_until)
            self.connectivity.mark_down(f"{self.max_retries} retries failed: {error}")
            return
        delay = backoff_delay(
            self.failures,
            base=self.backoff_base,
            cap=self.backoff_cap,
            rng=self.rng,
            retry_after=retry.retry_after if retry else None,
        )
        self.backoff_until = now + delay
        log.info(
            "send failed (%s); retry %d/%d in %.1fs", error, self.failures, self.max_retries, delay
        )

    def _maintain(self, now: float) -> None:
        if now >= self.next_checkpoint and self.store.needs_checkpoint():
            # Fold the WAL into the database off the hot path, so log_prediction seldom
            # pays for SQLite's automatic checkpoint (its p99) and the WAL stays small.
            self.next_checkpoint = now + CHECKPOINT_EVERY
            self.store.fold_in_steps()  # counters catch up with the rows committed since
            self.store.checkpoint_in_background()
        if now >= self.next_maintenance:
            self.next_maintenance = now + MAINTENANCE_EVERY
            self.capacity.enforce()
            self.store.checkpoint_in_background()
            if self.on_maintenance is not None:
                self.on_maintenance()
        if now >= self.next_cleanup:
            self.next_cleanup = now + CLEANUP_EVERY
            self.capacity.cleanup()
        if (
            self.reconciler is not None
            and self.reconciler.due(now)
            and not self.connectivity.is_down
        ):
            self.reconciler.run_once()

    def run_once(self) -> float | None:
        """Do at most one send; return seconds until the next pass is due (0 = at once).

        A full disk (a claim or a settle refused) runs the disk-full procedure, as a refused
        ``log_prediction`` does: delivered rows make room, and the next pass goes on."""
        try:
            return self._pass()
        except DiskFullError as exc:
            if self.disk_full is None:
                raise
            log.warning("disk full while shipping (%s); freeing delivered rows", exc)
            self.disk_full.free()
            return 0.05

    def _pass(self) -> float | None:
        now = self.clock.monotonic()
        if self.store.has_orphaned:  # rows a failed settle left in flight
            self.store.release_orphaned()
        self._maintain(now)
        # Idle wake-ups every batch_timeout: pending rows nobody announced are found too.
        timers = [self.next_maintenance - now, self.next_cleanup - now, self.batch_timeout]
        if self.reconciler is not None:
            timers.append(self.reconciler.next_due - now)
        if self.store.needs_checkpoint():
            timers.append(self.next_checkpoint - now)
        if self.connectivity.is_down:
            return max(0.0, min(timers))
        if now < self.backoff_until:
            return min([self.backoff_until - now, *timers])
        with self._lock:
            live_ready = self.new_count > 0 and (
                self.new_count >= self.batch_size
                or self.flush_requested
                or now - (self.first_new_at or now) >= self.batch_timeout
            )
            take = self.new_count
            if live_ready:
                self.new_count = 0
                self.first_new_at = None
            elif self.new_count == 0:
                self.flush_requested = False
        if live_ready:
            batch = self.store.claim(take, newest_first=True)
            if batch is not None:
                self._handle(self.sender.send_batch(batch), self.clock.monotonic())
            return 0.0
        if self.recovery.needs_pass(live=self.new_count):
            outcome = self.recovery.drain_step()
            if outcome is not None:
                self._handle(outcome, self.clock.monotonic())
                return 0.0
        with self._lock:
            if self.new_count:
                timers.append((self.first_new_at or now) + self.batch_timeout - now)
        return max(0.0, min(timers))

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgebuf-sender", daemon=True)
            self._thread.start()

    def step(self) -> float | None:
        """One pass as the thread runs it: an unexpected error is logged and survived (the
        loop retries in a second). Simulations drive this on a virtual clock."""
        try:
            return self.run_once()
        except Exception:
            # Never reset rows here: a batch may still be in flight on a drain thread.
            # Every batch settles its own rows (Sender.send_batch, release_claim).
            log.exception("shipping loop error; retrying in 1 s")
            return 1.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            delay = self.step()
            if delay is None or delay > 0:
                self._wake.wait(IDLE_WAKE if delay is None else min(delay, IDLE_WAKE))

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True if it ended within ``timeout``."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True
