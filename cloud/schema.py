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

__all__ = [
    "PARTITION_PREFIX",
    "PK_TYPE",
    "cloud_state",
    "detection_counts",
    "detection_rollups",
    "device_seqs",
    "metadata",
    "metadata_for",
    "prediction_rollups",
    "predictions",
    "seq_missing",
    "seq_repeats",
]

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
    # The idempotency key: the edge retries batches, the database de-duplicates. The same
    # columns as PostgreSQL's key (a re-send carries the record's timestamp unchanged), in
    # time order: the edge's record ids are random, so under (device_id, record_id) every
    # new record dirtied its own leaf page of an index that outgrows any cache (at 10 M
    # rows ~21 KB written per record against ~2 KB; ingest fell to 0.4-0.5x of an empty
    # table's), whereas new timestamps append at the end of each device's range. The
    # index also serves every (device_id, ts) lookup, so that index of its own went.
    UniqueConstraint("device_id", "ts", "record_id"),
    Index(None, "device_id", "seq"),
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

# Per (grain, bucket, device, model version): what `/stats` needs of the records, kept at
# ingest for the newly stored records only (`cloud.rollups`). grain is 3600 or 60 seconds;
# bucket is `cloud.buckets.bucket(ts, grain)`. version_key is '' for "no model version"
# and '=' + the version otherwise (a primary key column cannot be NULL).
prediction_rollups = Table(
    "prediction_rollups",
    metadata,
    Column("grain", Integer, primary_key=True),
    Column("bucket", Double, primary_key=True),
    Column("device_id", String(128), primary_key=True),
    Column("version_key", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("min_seq", BigInteger, nullable=False),
    Column("max_seq", BigInteger, nullable=False),
    Column("min_ts", Double, nullable=False),
    Column("max_ts", Double, nullable=False),
    Column("max_received_at", Double, nullable=False),
    sqlite_with_rowid=False,
)

# detection_counts summed per hour and per minute: bucket is bucket(floor(ts), grain).
detection_rollups = Table(
    "detection_rollups",
    metadata,
    Column("grain", Integer, primary_key=True),
    Column("bucket", Double, primary_key=True),
    Column("device_id", String(128), primary_key=True),
    Column("class_name", Text, primary_key=True),
    Column("n", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# The seqs a device holds (acknowledged: stored, or accepted as expired), incrementally:
# every seq in [1, contiguous_through] is held, none above max_seq, and the seqs missing
# in between are exactly the ranges of `seq_missing`. seq_count counts distinct held seqs,
# record_count the acknowledged records (two records may share a seq). Retention never
# changes it: a seq once acknowledged stays held.
device_seqs = Table(
    "device_seqs",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("max_seq", BigInteger, nullable=False),
    Column("contiguous_through", BigInteger, nullable=False),
    Column("seq_count", BigInteger, nullable=False),
    Column("record_count", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Missing seq ranges [lo, hi] (inclusive, disjoint) of a device, keyed by their end.
seq_missing = Table(
    "seq_missing",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("hi", BigInteger, primary_key=True),
    Column("lo", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# Every stored record whose seq is shared with another record of its device (rare: an
# edge that lost its state and counts again). `/stats` needs them to count distinct seqs
# in a time window exactly; retention removes them with their rows.
seq_repeats = Table(
    "seq_repeats",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("record_id", String(64), primary_key=True),
    Column("ts", Double, primary_key=True),
    sqlite_with_rowid=False,
)

# Service-wide values by name (today: the retention cutoff that maintenance applied).
cloud_state = Table(
    "cloud_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Double, nullable=False),
)

# ----------------------------------------------------------------- PostgreSQL's shape
# On PostgreSQL `predictions` is partitioned by day of `ts` (`cloud.maintenance` creates
# the partitions ahead). A unique key of a partitioned table must contain the partition
# key, so the idempotency key is (device_id, record_id, ts), its primary key: a re-send
# carries the record's timestamp unchanged. `id` comes from a sequence (still the paging
# cursor) with an index per partition. Every unique key holds device_id, so the tables
# can be distributed by device_id (Citus) as they are.
PARTITION_PREFIX = "predictions_p"

_pg_metadata = MetaData(naming_convention=metadata.naming_convention)
for _table in metadata.tables.values():
    if _table.name != "predictions":
        _table.to_metadata(_pg_metadata)
Table(
    "predictions",
    _pg_metadata,
    Column("id", BigInteger, nullable=False),
    Column("device_id", String(128), primary_key=True),
    Column("record_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("image_id", String(256), nullable=True),
    Column("ts", Double, primary_key=True),
    Column("model_version", String(128), nullable=True),
    Column("prediction", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    Column("batch_id", String(64), nullable=False),
    Index(None, "id"),
    Index(None, "device_id", "seq"),
    Index(None, "device_id", "ts"),
    postgresql_partition_by="RANGE (ts)",
)


def metadata_for(dialect: str) -> MetaData:
    """The schema as the migrations build it on `dialect` ('sqlite' or 'postgresql')."""
    return _pg_metadata if dialect == "postgresql" else metadata
