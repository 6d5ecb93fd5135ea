"""SQLite: the idempotency key becomes (device_id, ts, record_id), time-local.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

The edge's record ids are random, so the unique index on (device_id, record_id) took every
new record to a random leaf page: once it outgrew the cache (a few hundred thousand
rows) each record dirtied a page of its own, and at 10 M rows ingest wrote ~21 KB per
record and ran at 0.4-0.5x of an empty table's rate (bench/cloud_volume.py and its probe,
README). Keyed (device_id, ts, record_id), new records append at the end of each
device's range. These are the columns of PostgreSQL's key since 0003 (a re-send carries
the record's timestamp unchanged), so both backends now de-duplicate alike. The unique
index serves every (device_id, ts) lookup as well, so that index goes.

SQLite cannot alter a table's constraints: the table is rebuilt, every row copied with
its id (so the paging cursor and "ids above max(id) are this transaction's" hold), in
the migration's one transaction. On a big database that is the slow part (~15 minutes
per 10 M rows on a loaded 2-core box), and the old table's pages stay in the file as
free pages that new rows reuse; `VACUUM` gives them back to the file system.
PostgreSQL: nothing to do.

Written out in full rather than imported from `cloud.*`, so later changes there can never
silently change what this revision did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "id, device_id, record_id, seq, image_id, ts, model_version, prediction, received_at, batch_id"
)


def _rebuild(key: tuple[str, ...], key_name: str, on_conflict: str) -> None:
    """Copy `predictions` into a new table unique on `key`, then put it in its place."""
    op.create_table(
        "predictions_0004",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("image_id", sa.String(256), nullable=True),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=True),
        sa.Column("prediction", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
        sa.UniqueConstraint(*key, name=key_name),
    )
    op.execute(
        f"INSERT INTO predictions_0004 ({COLUMNS}) SELECT {COLUMNS} FROM predictions"
        f" ORDER BY id{on_conflict}"
    )
    op.execute("DROP TABLE predictions")  # its indexes go with it
    op.execute("ALTER TABLE predictions_0004 RENAME TO predictions")
    op.create_index("ix_predictions_device_id_seq", "predictions", ["device_id", "seq"])


def upgrade() -> None:
    """Rebuild SQLite's `predictions` unique on (device_id, ts, record_id)."""
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(("device_id", "ts", "record_id"), "uq_predictions_device_id_ts_record_id", "")


def downgrade() -> None:
    """Back to (device_id, record_id) plus the (device_id, ts) index.

    Two stored records that differ only in their timestamp cannot both stay: the later
    one (higher id) is dropped, and the rollups then count one record too many for it.
    """
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(
        ("device_id", "record_id"),
        "uq_predictions_device_id_record_id",
        " ON CONFLICT DO NOTHING",
    )
    op.create_index("ix_predictions_device_id_ts", "predictions", ["device_id", "ts"])
