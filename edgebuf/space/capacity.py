"""Cleanup and capacity: keep the buffer inside its volume without losing a record silently.

``capacity_bytes`` limits the bytes the buffer holds in records (their JSON plus a fixed
per-row overhead), counted exactly in ``buffer_metadata.live_bytes``: deletes change it in
their own transaction, inserts are folded in after (``LocalBufferManager.fold``), and the
client's store keeps an upper bound of it, so an insert that surely fits checks nothing
and one that might not runs this policy on exact numbers. The file itself is kept close
to that by incremental vacuum after cleanup.

Order of measures, from free to costly:
1. ``cleanup()``: delete ``sent`` rows older than ``cleanup_after_days`` (daily, on demand,
   and whenever the buffer reaches 90% of ``capacity_bytes``).
2. At 90%: also delete the oldest ``sent`` rows, young or not, down to 80%. They were
   delivered; keeping them longer is a convenience, not a guarantee.
3. Only when undelivered rows fill the capacity does the overflow policy act on a new record:
   ``evict`` removes pending rows lowest priority first, oldest first (default priority:
   frames with an empty ``detections`` list are 0, everything else 1), each one written
   to ``dropped_records`` with reason ``capacity`` and counted in ``evicted_capacity``
   (the newest ``audit_rows(capacity_bytes)`` keep their own row; older ones are folded,
   by device, into ``dropped_summary`` with exact counts and sequence ranges);
   ``reject`` refuses the new record with ``BufferFullError`` and counts ``rejected_full``.
Deletes run in short transactions (``CHUNK`` rows) so logging never waits long.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from edgebuf.errors import BufferFullError
from edgebuf.records import NewRecord
from edgebuf.store import LocalBufferManager
from edgebuf.store.maintenance import Room
from edgebuf.store.schema import ROW_OVERHEAD, audit_rows

log = logging.getLogger("edgebuf.space.capacity")

HIGH_WATER = 0.90
LOW_WATER = 0.80
CHUNK = 5_000
TIGHT_CHUNK = 200
DAY = 86_400.0


class CapacityManager:
    """Applies the cleanup rules and the overflow policy to one store."""

    def __init__(
        self,
        store: LocalBufferManager,
        *,
        capacity_bytes: int,
        cleanup_after_days: float = 7.0,
        overflow_policy: str = "evict",
        require_confirmation: bool = False,
    ) -> None:
        self.store = store
        self.capacity_bytes = capacity_bytes
        self.cleanup_after_days = cleanup_after_days
        self.overflow_policy = overflow_policy
        # With reconciliation on, the daily cleanup deletes only delivered rows the cloud has
        # confirmed holding; the 90% rule and a full disk take confirmed rows first.
        self.require_confirmation = require_confirmation

    def used_bytes(self) -> int:
        """Bytes held in records (``live_bytes``)."""
        return int(self.store.metadata().get("live_bytes", 0))

    def fraction_used(self) -> float:
        return self.used_bytes() / self.capacity_bytes

    # ------------------------------------------------------------------ cleanup
    def _delete_sent_chunk(
        self, sent_before: float | None, tight: bool = False, confirmed: bool | None = None
    ) -> int:
        """One short transaction deleting the oldest matching sent rows.

        ``tight`` (on a full disk): small chunks, each followed by a checkpoint, so the WAL
        is reused from its start instead of growing - a delete only rewrites existing pages,
        so the checkpoint needs no new space either."""
        n = self.store.delete_sent(
            sent_before=sent_before, limit=TIGHT_CHUNK if tight else CHUNK, confirmed=confirmed
        )
        if tight:
            self.store.checkpoint("RESTART")
        return n

    def cleanup(
        self, older_than_days: float | None = None, *, tight: bool = False
    ) -> dict[str, int]:
        """Delete sent rows older than ``older_than_days`` (default ``cleanup_after_days``),
        then hand freed pages back to the filesystem. Pending and failed rows are never
        touched. Returns counts of what it did."""
        days = self.cleanup_after_days if older_than_days is None else older_than_days
        now = self.store.clock.time()
        before = self.store.size_info()["file_bytes"]
        deleted = 0
        while True:
            n = self._delete_sent_chunk(
                now - days * DAY, tight, True if self.require_confirmation else None
            )
            deleted += n
            if n < (TIGHT_CHUNK if tight else CHUNK):
                break
        self.store.set_last_cleanup(now)
        if deleted:
            self.store.incremental_vacuum()
            log.info("cleanup: deleted %d sent records older than %g days", deleted, days)
        after = self.store.size_info()["file_bytes"]
        return {"deleted": deleted, "reclaimed_bytes": max(0, before - after)}

    def enforce(self) -> dict[str, int]:
        """The 90% rule: at 90% run cleanup, then trim the oldest sent rows down to 80%."""
        report = {"deleted": 0, "reclaimed_bytes": 0, "trimmed": 0}
        if self.fraction_used() < HIGH_WATER:
            return report
        report.update(self.cleanup())
        for confirmed in (True, None):  # confirmed rows first, then any delivered row
            while self.fraction_used() > LOW_WATER:
                n = self._delete_sent_chunk(None, confirmed=confirmed)
                report["trimmed"] += n
                if n == 0:
                    break
        if report["trimmed"]:
            self.store.incremental_vacuum()
        return report

    def delete_all_sent(self) -> int:
        """Delete every sent row, oldest first, in tight chunks (the disk-full measure)."""
        deleted = 0
        for confirmed in (True, None):  # confirmed rows first, then any delivered row
            while True:
                n = self._delete_sent_chunk(None, tight=True, confirmed=confirmed)
                deleted += n
                if n < TIGHT_CHUNK:
                    break
        return deleted

    # ------------------------------------------------------------------ admission
    def make_room(self, room: Room, records: Sequence[NewRecord], live_after: int) -> None:
        """Hook run inside the insert transaction, before ``records`` are inserted and with
        ``live_after`` = bytes held once they are: make room for them or refuse them."""
        over = live_after - self.capacity_bytes
        if over <= 0:
            return
        incoming = sum(len(r.prediction_json) for r in records) + len(records) * ROW_OVERHEAD
        if incoming > self.capacity_bytes:
            raise BufferFullError(f"{incoming} bytes of records exceed capacity_bytes itself")
        # Sent rows first: deleting them loses nothing. Free 1% extra so this is not per record.
        slack = self.capacity_bytes // 100
        over -= room.evict("sent", over + slack, reason=None)
        if over <= 0:
            return
        if self.overflow_policy == "reject":
            raise BufferFullError(
                f"buffer is full: {room.live_bytes()} of {self.capacity_bytes} bytes hold "
                "records not yet delivered and overflow_policy='reject'. Nothing of this call "
                "was stored; nothing buffered was lost."
            )
        freed = room.evict(
            "pending", over + slack, reason="capacity", audit_rows=audit_rows(self.capacity_bytes)
        )
        if freed:
            log.warning(
                "buffer full: evicted %d bytes of pending records (reason: capacity)", freed
            )
        over -= freed
        if over > 0:
            raise BufferFullError(
                f"buffer is full and nothing more can be evicted ({self.capacity_bytes} bytes)"
            )
