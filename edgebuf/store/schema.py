"""The buffer's SQLite schema and connection settings (the design's tables, plus what
exactly-once delivery needs: a record id, a per-device sequence, a claim marker).

Why each PRAGMA:
- ``journal_mode=WAL``: a writer does not block readers (status, export) and a commit is
  one sequential append, which keeps ``log_prediction`` fast.
- ``synchronous=NORMAL`` (default durability): a committed record survives the process
  being killed at any moment; SQLite itself syncs the WAL only at a checkpoint, so
  ``edgebuf.syncer.WalSyncer`` fsyncs it at least every ``sync_interval`` (1 s): a power
  cut loses at most the commits of that last interval. ``synchronous=FULL``
  (durability="full") syncs the WAL on every commit, so a committed record also survives
  power loss at once.
- ``auto_vacuum=INCREMENTAL``: freed pages can be handed back to the filesystem after
  cleanup without a full VACUUM that would block logging.
- On a full disk the client checkpoints with ``TRUNCATE`` (the WAL holds many versions of
  the same pages, so this gives space back) after releasing its disk reserve
  (``edgebuf.space.reserve``), so cleanup and logging can go on.
"""

from __future__ import annotations

import enum
import sqlite3
from typing import TypeAlias

from edgebuf.errors import StorageError

SqlValue: TypeAlias = int | float | str | bytes | None  # what one SQLite column holds
Row: TypeAlias = tuple[SqlValue, ...]  # a row as ``fetchall`` returns it

# 2: counters folded in after the commit (``counted_through``)
# 3: ``confirmed_at``: the cloud confirmed holding a delivered row (reconciliation)
SCHEMA_VERSION = 4


class Status(str, enum.Enum):
    """Row states, stored as these stable strings."""

    PENDING = "pending"  # buffered, waiting to be sent
    SENDING = "sending"  # claimed by a batch in flight; start-up returns it to pending
    SENT = "sent"  # the cloud acknowledged it; ``confirmed_at`` once it confirms holding it
    FAILED = "failed"  # refused by the cloud as invalid (dead letter); kept, requeueable


CREATE_STATEMENTS = (
    """
    CREATE TABLE IF NOT EXISTS prediction_buffer (
        id              INTEGER PRIMARY KEY,
        record_id       TEXT    NOT NULL,
        device_id       TEXT    NOT NULL,
        seq             INTEGER NOT NULL,
        prediction_data TEXT    NOT NULL,
        image_id        TEXT,
        model_version   TEXT,
        timestamp       REAL    NOT NULL,
        buffered_at     REAL    NOT NULL,
        sent_at         REAL,
        confirmed_at    REAL,
        status          TEXT    NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
        retry_count     INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        priority        INTEGER NOT NULL DEFAULT 1,
        claim_id        TEXT
    )
    """,
    # One index serves claiming oldest-first and newest-first, counting by status and
    # cleanup. The design's other indexes (image_id, timestamp, buffered_at) are left out on
    # purpose: each one is another page written to the WAL on every commit of the hot path.
    "CREATE INDEX IF NOT EXISTS idx_status ON prediction_buffer (status, id)",
    # Counters and per-device sequences in one small WITHOUT ROWID table (one page). An
    # insert does not write it: rows are folded into it later (see COUNTED_THROUGH).
    """
    CREATE TABLE IF NOT EXISTS buffer_metadata (
        key   TEXT PRIMARY KEY,
        value REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # Every record removed without delivery, by reason: the audit trail behind "never drop
    # silently". Gaps the cloud reports can be matched against these rows.
    """
    CREATE TABLE IF NOT EXISTS dropped_records (
        id          INTEGER PRIMARY KEY,
        record_id   TEXT    NOT NULL,
        device_id   TEXT    NOT NULL,
        seq         INTEGER NOT NULL,
        image_id    TEXT,
        priority    INTEGER NOT NULL,
        timestamp   REAL    NOT NULL,
        reason      TEXT    NOT NULL,
        dropped_at  REAL    NOT NULL
    )
    """,
    # Schema 4: the audit above keeps the newest ``audit_rows(capacity)`` records; older ones
    # are folded here, by device and reason, in the same transaction (counts and sequence
    # ranges exact), so a months-long outage with the evict policy cannot grow the file.
    """
    CREATE TABLE IF NOT EXISTS dropped_summary (
        device_id        TEXT    NOT NULL,
        reason           TEXT    NOT NULL,
        records          INTEGER NOT NULL,
        seq_min          INTEGER NOT NULL,
        seq_max          INTEGER NOT NULL,
        timestamp_min    REAL    NOT NULL,
        timestamp_max    REAL    NOT NULL,
        first_dropped_at REAL    NOT NULL,
        last_dropped_at  REAL    NOT NULL,
        PRIMARY KEY (device_id, reason)
    ) WITHOUT ROWID
    """,
)


def audit_rows(capacity_bytes: int) -> int:
    """How many dropped records keep their own audit row (record id, image id, priority):
    one per 4 KiB of capacity, at least 100, at most 100,000 (about 15 MB). Beyond that the
    oldest are summarised in ``dropped_summary``."""
    return max(100, min(100_000, capacity_bytes // 4096))


# Counters kept in buffer_metadata. Each is changed in the same transaction as the rows it
# counts, except total_buffered and live_bytes for inserted rows: see COUNTED_THROUGH.
COUNTERS = (
    "total_buffered",  # records committed by log_prediction(s)
    "total_sent",  # records acknowledged by the cloud
    "total_failed",  # records dead-lettered (moved to 'failed')
    "total_requeued",  # failed records put back to pending by requeue_failed()
    "total_cleaned",  # sent records deleted by cleanup
    "evicted_capacity",  # pending records evicted by the overflow policy (see dropped_records)
    "rejected_full",  # log calls refused with BufferFullError (overflow_policy="reject")
    "last_cleanup",  # wall time of the last cleanup run (0 = never)
    "live_bytes",  # bytes of JSON + ROW_OVERHEAD per row held: what capacity_bytes limits
    "total_confirmed",  # delivered records the cloud confirmed holding (reconciliation)
    "total_reconcile_resent",  # delivered records the cloud no longer held: sent again
)

# Schema 3: delivered rows the cloud has not yet confirmed holding, by device and sequence:
# what reconciliation reads. Partial, so it costs a write only when a row is acknowledged or
# confirmed, never on the logging hot path.
UNCONFIRMED_INDEX = (
    "CREATE INDEX IF NOT EXISTS idx_unconfirmed ON prediction_buffer (device_id, seq)"
    " WHERE status = 'sent' AND confirmed_at IS NULL"
)
# Every delivered row by device and sequence: a cloud restored from an older backup loses
# confirmed rows too, and reconciliation finds the ones in its missing ranges through this.
SENT_SEQ_INDEX = (
    "CREATE INDEX IF NOT EXISTS idx_sent_seq ON prediction_buffer (device_id, seq)"
    " WHERE status = 'sent'"
)

# Rows with an id above this metadata value are not yet in the counters, the per-device
# sequence high-water marks or live_bytes: the insert commits the row alone, and
# ``LocalBufferManager.fold`` adds it later (every delete folds first). Readers add the
# rows above it themselves (``edgebuf.store.effective_metadata``).
COUNTED_THROUGH = "counted_through"

# Bytes a row costs beyond its JSON text (record id, sequence, timestamps, index entry).
ROW_OVERHEAD = 120

SEQ_PREFIX = "seq:"


def migrate(conn: sqlite3.Connection, path: object) -> None:
    """Inside a write transaction: create what is missing and upgrade an older buffer in
    place; refuse a buffer written by a newer edgebuf (it could count differently)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path} has schema version {version}, newer than this edgebuf "
            f"({SCHEMA_VERSION}); upgrade edgebuf"
        )
    for stmt in CREATE_STATEMENTS:
        conn.execute(stmt)
    conn.executemany(
        "INSERT OR IGNORE INTO buffer_metadata (key, value) VALUES (?, 0)",
        [(name,) for name in COUNTERS],
    )
    # Schema 1 counted every row in the commit that inserted it: all are folded.
    conn.execute(
        "INSERT OR IGNORE INTO buffer_metadata (key, value)"
        " SELECT ?, coalesce(max(id), 0) FROM prediction_buffer",
        (COUNTED_THROUGH,),
    )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(prediction_buffer)")}
    if "confirmed_at" not in columns:  # schema 2 -> 3: every delivered row starts unconfirmed
        conn.execute("ALTER TABLE prediction_buffer ADD COLUMN confirmed_at REAL")
    conn.execute(UNCONFIRMED_INDEX)
    conn.execute(SENT_SEQ_INDEX)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
