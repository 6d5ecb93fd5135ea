"""Confirmation: which delivered rows the cloud still holds (end-to-end reconciliation).

An acknowledgement means the cloud committed a batch; it can still lose it later (restored
from an older backup, an operator's mistake). Delivered rows therefore stay ``sent`` with
``confirmed_at`` NULL until reconciliation has read the cloud's own account of the device
(``GET /devices/{id}/watermark``) and found them there; a delivered row the cloud no longer
holds goes back to ``pending`` and is sent again through the normal exactly-once path.
Cleanup deletes confirmed rows first (``edgebuf.space.capacity``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from edgebuf.store.counters import effective_metadata
from edgebuf.store.maintenance import Maintenance
from edgebuf.store.schema import SEQ_PREFIX


class Confirmation(Maintenance):
    """Reads and writes of the confirmation state, for ``edgebuf.delivery.reconcile``."""

    _last_seq: dict[str, int]  # the queue's cache of each device's last sequence number

    def unconfirmed_devices(self) -> list[tuple[str, int, int]]:
        """[(device, lowest seq, rows)] of delivered rows not yet confirmed (partial index)."""
        with self._lock, self._storage_errors("read unconfirmed records"):
            return [
                (d, int(lo), int(n))
                for d, lo, n in self._conn.execute(
                    "SELECT device_id, min(seq), count(*) FROM prediction_buffer"
                    " WHERE status = 'sent' AND confirmed_at IS NULL GROUP BY device_id"
                )
            ]

    def delivered_devices(self) -> list[tuple[str, int]]:
        """[(device, lowest seq)] of the delivered rows this buffer still holds."""
        with self._lock, self._storage_errors("read delivered records"):
            devices = [d for (d,) in self._conn.execute(
                "SELECT DISTINCT device_id FROM prediction_buffer INDEXED BY idx_sent_seq"
                " WHERE status = 'sent'"
            )]  # fmt: skip
            return [
                (d, int(self._conn.execute(
                    "SELECT min(seq) FROM prediction_buffer INDEXED BY idx_sent_seq"
                    " WHERE device_id = ? AND status = 'sent'", (d,),
                ).fetchone()[0]))
                for d in devices
            ]  # fmt: skip

    def delivered_in(
        self, device_id: str, first: int, last: int, *, sent_before: float, limit: int
    ) -> list[int]:
        """Row ids of delivered rows (confirmed or not) with a seq in [first, last],
        acknowledged before ``sent_before``, at most ``limit``."""
        with self._lock, self._storage_errors("read delivered records"):
            return [
                int(i)
                for (i,) in self._conn.execute(
                    "SELECT id FROM prediction_buffer INDEXED BY idx_sent_seq"
                    " WHERE device_id = ? AND status = 'sent' AND seq BETWEEN ? AND ?"
                    " AND sent_at < ? ORDER BY seq LIMIT ?",
                    (device_id, first, last, sent_before, limit),
                )
            ]

    def unconfirmed(
        self, device_id: str, *, after_seq: int, limit: int
    ) -> list[tuple[int, int, float]]:
        """[(row id, seq, sent_at)] of the device's unconfirmed delivered rows with a seq
        above ``after_seq``, lowest first, at most ``limit``."""
        with self._lock, self._storage_errors("read unconfirmed records"):
            return [
                (int(i), int(q), float(t))
                for i, q, t in self._conn.execute(
                    "SELECT id, seq, sent_at FROM prediction_buffer INDEXED BY idx_unconfirmed"
                    " WHERE device_id = ? AND status = 'sent' AND confirmed_at IS NULL"
                    " AND seq > ? ORDER BY seq LIMIT ?",
                    (device_id, after_seq, limit),
                )
            ]

    def confirm(self, ids: Sequence[int]) -> int:
        """The cloud holds these delivered rows: set ``confirmed_at`` (counted)."""
        return self._confirmation_update(
            ids, "confirmed_at = ?", (self.clock.time(),), "total_confirmed"
        )

    def resend(self, ids: Sequence[int]) -> int:
        """The cloud no longer holds these delivered rows (confirmed or not): back to
        ``pending``, unconfirmed (counted)."""
        return self._confirmation_update(
            ids,
            "status = 'pending', sent_at = NULL, confirmed_at = NULL,"
            " last_error = 'not held by the cloud (reconciliation)'",
            (),
            "total_reconcile_resent",
            only_unconfirmed=False,
        )

    def count_unconfirmed(self) -> int:
        """Delivered rows the cloud has not yet confirmed (walks the partial index only)."""
        with self._lock, self._storage_errors("count unconfirmed records"):
            return int(
                self._conn.execute(
                    "SELECT count(*) FROM prediction_buffer INDEXED BY idx_unconfirmed"
                    " WHERE status = 'sent' AND confirmed_at IS NULL"
                ).fetchone()[0]
            )

    def count_confirmed(self) -> dict[str, int]:
        """Delivered rows held by the buffer: confirmed by the cloud and not yet."""
        unconfirmed = self.count_unconfirmed()
        return {"confirmed": self.counts()["sent"] - unconfirmed, "unconfirmed": unconfirmed}

    def raise_sequence(self, device_id: str, seq: int) -> bool:
        """Make the device's next sequence number higher than ``seq`` (the cloud holds it
        although this buffer does not remember issuing it: records lost to a power cut in
        ``normal`` mode). True if the buffer's own mark was lower."""
        key = SEQ_PREFIX + device_id
        with self._lock, self._storage_errors("raise the sequence"), self._tx() as conn:
            mine = int(effective_metadata(conn).get(key, 0))
            if seq <= mine:
                return False
            conn.execute(
                "INSERT INTO buffer_metadata (key, value) VALUES (?, ?) ON CONFLICT(key)"
                " DO UPDATE SET value = max(value, excluded.value)",
                (key, seq),
            )
            if device_id in self._last_seq:
                self._last_seq[device_id] = max(self._last_seq[device_id], seq)
        return True

    def sequences(self) -> dict[str, int]:
        """Each device's highest sequence number issued by this buffer."""
        return {
            k[len(SEQ_PREFIX) :]: int(v)
            for k, v in self.metadata().items()
            if k.startswith(SEQ_PREFIX)
        }

    def _confirmation_update(
        self,
        ids: Sequence[int],
        set_sql: str,
        params: tuple[object, ...],
        counter: str,
        *,
        only_unconfirmed: bool = True,
    ) -> int:
        if not ids:
            return 0
        where = "status = 'sent'" + (" AND confirmed_at IS NULL" if only_unconfirmed else "")
        with self._storage_errors("update confirmation"), self._tx() as conn:
            changed = conn.execute(
                f"UPDATE prediction_buffer SET {set_sql} WHERE id IN"
                f" (SELECT value FROM json_each(?)) AND {where}",
                (*params, json.dumps(list(ids))),
            ).rowcount
            if changed:
                conn.execute(
                    "UPDATE buffer_metadata SET value = value + ? WHERE key = ?", (changed, counter)
                )
        return int(changed)
