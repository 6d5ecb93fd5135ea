"""Which seqs a device holds, kept incrementally: a watermark plus the missing ranges above it.

`device_seqs` has one row per device (max_seq, contiguous_through, distinct seq count,
acknowledged record count) and `seq_missing` the ranges of seqs not held between
contiguous_through and max_seq. Each batch updates them in its own transaction with the
seqs of the records it acknowledged (newly stored, or accepted as expired):

* the usual batch continues the device's seqs exactly (lo = max_seq + 1, each seq once):
  one UPDATE (on PostgreSQL folded into the insert statement, `cloud.statements`);
* anything else (a re-send that fills a gap, a jump ahead, a repeated seq, a new device
  that does not start at 1) locks the device's row (`FOR UPDATE` on PostgreSQL; SQLite
  writers are serialized anyway), reads only the missing ranges the batch's seqs fall
  into, and rewrites those.

Reads (`/devices/{id}/gaps`, `/devices/{id}/watermark`) then cost O(ranges returned). A
record whose seq was already held is a "repeat"; the stored ones are listed in
`seq_repeats` with every other stored record of their seq, which lets `/stats` count
distinct seqs in a time window exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from sqlalchemy import Connection

from cloud.statements import execute

__all__ = ["Entry", "hold"]

# (seq, record_id, ts, stored): one acknowledged record.
Entry = tuple[int, str, float, bool]

_FAST = (
    "UPDATE device_seqs SET max_seq = ?, contiguous_through = CASE WHEN"
    " contiguous_through = max_seq THEN ? ELSE contiguous_through END,"
    " seq_count = seq_count + ?, record_count = record_count + ?"
    " WHERE device_id = ? AND max_seq = ?"
)
_NEW_DEVICE = (
    "INSERT INTO device_seqs (device_id, max_seq, contiguous_through, seq_count, record_count)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id) DO NOTHING"
)


def _fast(conn: Connection, device_id: str, run: tuple[int, int]) -> bool:
    """Advance the state by seqs lo..hi if they continue it exactly; True if done."""
    lo, hi = run
    k = hi - lo + 1
    rowcount, _ = execute(conn, _FAST, (hi, hi, k, k, device_id, lo - 1))
    if rowcount == 1:
        return True
    if lo == 1:
        rowcount, _ = execute(conn, _NEW_DEVICE, (device_id, hi, hi, k, k))
        return rowcount == 1
    return False


def _lock_state(conn: Connection, device_id: str) -> tuple[int, int, int]:
    execute(conn, _NEW_DEVICE, (device_id, 0, 0, 0, 0))
    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE"
    _, rows = execute(
        conn,
        f"SELECT max_seq, seq_count, record_count FROM device_seqs WHERE device_id = ?{lock}",
        (device_id,),
    )
    max_seq, seq_count, record_count = rows[0]
    return int(max_seq), int(seq_count), int(record_count)


def _ranges_touching(
    conn: Connection, device_id: str, low: int, high: int
) -> list[tuple[int, int]]:
    """Missing ranges that overlap [low, high]: those ending inside, and the next one."""
    _, inside = execute(
        conn,
        "SELECT lo, hi FROM seq_missing WHERE device_id = ? AND hi >= ? AND hi <= ? ORDER BY hi",
        (device_id, low, high),
    )
    _, after = execute(
        conn,
        "SELECT lo, hi FROM seq_missing WHERE device_id = ? AND hi > ? ORDER BY hi LIMIT 1",
        (device_id, high),
    )
    ranges = [(int(lo), int(hi)) for lo, hi in inside]
    if after and int(after[0][0]) <= high:
        ranges.append((int(after[0][0]), int(after[0][1])))
    return ranges


def _pieces(lo: int, hi: int, taken: Sequence[int]) -> list[tuple[int, int]]:
    """What is left of [lo, hi] without the sorted seqs `taken` (all inside it)."""
    left: list[tuple[int, int]] = []
    cursor = lo
    for seq in taken:
        if seq > cursor:
            left.append((cursor, seq - 1))
        cursor = seq + 1
    if cursor <= hi:
        left.append((cursor, hi))
    return left


def hold(
    conn: Connection, device_id: str, entries: Sequence[Entry], run: tuple[int, int] | None
) -> set[str]:
    """Mark the seqs of `entries` held; return the record_ids whose seq was held already.

    `run` is (lo, hi) when the entries' seqs are exactly lo..hi, one each (then the
    common case is one UPDATE). Runs in the caller's transaction.
    """
    if not entries:
        return set()
    if run is not None and _fast(conn, device_id, run):
        return set()
    max_seq, seq_count, record_count = _lock_state(conn, device_id)
    seqs = sorted({entry[0] for entry in entries})
    split = bisect.bisect_right(seqs, max_seq)
    low, high = seqs[:split], seqs[split:]
    fresh: set[int] = set(high)
    removed: list[tuple[str, int]] = []
    added: list[tuple[str, int, int]] = []  # (device_id, hi, lo), as the table's columns
    if low:
        for lo, hi in _ranges_touching(conn, device_id, low[0], low[-1]):
            taken = low[bisect.bisect_left(low, lo) : bisect.bisect_right(low, hi)]
            if taken:
                fresh.update(taken)
                removed.append((device_id, hi))
                added += [(device_id, b, a) for a, b in _pieces(lo, hi, taken)]
    if high:
        added += [(device_id, b, a) for a, b in _pieces(max_seq + 1, high[-1], high)]
        max_seq = high[-1]
    if removed:
        execute(conn, "DELETE FROM seq_missing WHERE device_id = ? AND hi = ?", removed, many=True)
    if added:
        execute(
            conn, "INSERT INTO seq_missing (device_id, hi, lo) VALUES (?, ?, ?)", added, many=True
        )
    # Records acknowledged now: every stored one, and the expired ones whose seq is new
    # (an expired record whose seq is held already is a re-send: not counted twice).
    acknowledged = 0
    repeats: set[str] = set()
    claimed: set[int] = set()
    repeated_stored: set[int] = set()
    for seq, record_id, _ts, stored in sorted(entries, key=lambda e: (e[0], not e[3])):
        if seq in fresh and seq not in claimed:
            claimed.add(seq)
            acknowledged += 1
            continue
        repeats.add(record_id)
        acknowledged += stored
        if stored:
            repeated_stored.add(seq)
    if repeated_stored:
        marks = ", ".join("?" * len(repeated_stored))
        execute(
            conn,
            "INSERT INTO seq_repeats (device_id, seq, record_id, ts)"
            " SELECT device_id, seq, record_id, ts FROM predictions"
            f" WHERE device_id = ? AND seq IN ({marks})"
            " ON CONFLICT (device_id, seq, record_id, ts) DO NOTHING",
            (device_id, *sorted(repeated_stored)),
        )
    _, first = execute(
        conn, "SELECT lo FROM seq_missing WHERE device_id = ? ORDER BY hi LIMIT 1", (device_id,)
    )
    contiguous = int(first[0][0]) - 1 if first else max_seq
    execute(
        conn,
        "UPDATE device_seqs SET max_seq = ?, contiguous_through = ?,"
        " seq_count = ?, record_count = ? WHERE device_id = ?",
        (max_seq, contiguous, seq_count + len(fresh), record_count + acknowledged, device_id),
    )
    return repeats
