"""Tables of the cloud store, as SQLAlchemy Core metadata.

This describes the schema that the newest Alembic revision produces; the migrations under
`cloud/migrations/versions/` are the source of truth for creating it, and a test compares
the two so they cannot drift. Column lengths equal the wire contract's limits, which the
request models enforce first, so a valid request can never hit a database length error
(that would be a 503 the edge retries forever).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["PK_TYPE", "detection_counts", "metadata", "predictions"]

# BIGINT on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" aliases the rowid and
# autoincrements, so the variant is required there.
PK_TYPE = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", PK_TYPE, primary_key=True, autoincrement=True),
    Column("device_id", String(128), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("image_id", String(256), nullable=True),
    # Epoch seconds (UTC) as a double: exact for the edge's float clock, sortable, and the
    # same type on both backends, so since/until filters need no timezone handling.
    Column("ts", Double, nullable=False),
    Column("model_version", String(128), nullable=True),
    # Stored as JSON text, not JSONB: verbatim and portable (JSONB rejects \u0000).
    Column("prediction", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    Column("batch_id", String(64), nullable=False),
    # The idempotency key: the edge retries batches, the database de-duplicates.
    UniqueConstraint("device_id", "record_id"),
    Index(None, "device_id", "seq"),
    Index(None, "device_id", "ts"),
    Index(None, "model_version"),
)

# Running totals of detections per (device, second of the record's timestamp, class):
# `bucket` is floor(ts). Each batch adds its newly stored records' detections in the
# same transaction (an upsert), so retried batches never double count. A busy device adds
# a few rows per second instead of one per record and class; `/stats` sums the totals,
# and for a time window whose bounds fall inside a second it counts the records of those
# two seconds from their predictions, so the figure stays exact (`cloud.queries`).
# WITHOUT ROWID on SQLite: the primary key is the table, one B-tree instead of two.
detection_counts = Table(
    "detection_counts",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("bucket", Double, primary_key=True),
    Column("class_name", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
