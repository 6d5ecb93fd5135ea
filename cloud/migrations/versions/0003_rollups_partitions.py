"""Rollups, incremental seq state, retention state; day partitions on PostgreSQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Adds `prediction_rollups` (per hour, minute and second), `detection_rollups` (per hour
and minute),
`device_seqs` + `seq_missing` (the seqs each device holds, as a watermark plus missing
ranges), `seq_repeats` (records sharing a seq) and `cloud_state`, and fills them all from
the stored rows, so every figure of `/stats` and `/devices/{id}/gaps` is what it was. The
index on model_version goes (the rollups answer per-version counts).

On PostgreSQL `predictions` becomes a table partitioned by day of `ts`, keyed by
(device_id, record_id, ts) (a partitioned table's unique keys must hold the partition
key); every row is copied with its id, one partition per day that has rows plus a default
partition for the rest. That copy is the slow part on a big database (minutes per ten
million rows); it runs in the migration's one transaction.

Written out in full rather than imported from `cloud.*`, so later changes there can never
silently change what this revision did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WILD = 3600.0 * 2**28  # ~9.7e11 s (30,000 years): a multiple of every grain
RECORD_GRAINS = (3600, 60, 1)
DETECTION_GRAINS = (3600, 60)
DAY = 86_400
# Days outside this range (year 1970 to 2100) stay in the default partition.
FIRST_DAY, LAST_DAY = 0, 4_102_444_800 // DAY

COLUMNS = (
    "id, device_id, record_id, seq, image_id, ts, model_version, prediction, received_at, batch_id"
)


def _bucket_sql(column: str, grain: int, dialect: str) -> str:
    q = f"({column}) / {grain}.0"
    if dialect == "postgresql":
        floor = f"floor({q})"
    else:
        floor = f"(CAST({q} AS INTEGER) - ({q} < CAST({q} AS INTEGER)))"
    start = f"({floor} * {grain})"
    return (
        f"(CASE WHEN ({column}) >= {WILD!r} OR ({column}) <= -{WILD!r} THEN ({column})"
        f" WHEN {start} > ({column}) THEN {start} - {grain}"
        f" WHEN {start} + {grain} <= ({column}) THEN {start} + {grain}"
        f" ELSE {start} END)"
    )


def _create_tables() -> None:
    op.create_table(
        "prediction_rollups",
        sa.Column("grain", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Double(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("version_key", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("min_seq", sa.BigInteger(), nullable=False),
        sa.Column("max_seq", sa.BigInteger(), nullable=False),
        sa.Column("min_ts", sa.Double(), nullable=False),
        sa.Column("max_ts", sa.Double(), nullable=False),
        sa.Column("max_received_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint(
            "grain", "bucket", "device_id", "version_key", name="pk_prediction_rollups"
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "detection_rollups",
        sa.Column("grain", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Double(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("class_name", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "grain", "bucket", "device_id", "class_name", name="pk_detection_rollups"
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "device_seqs",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("max_seq", sa.BigInteger(), nullable=False),
        sa.Column("contiguous_through", sa.BigInteger(), nullable=False),
        sa.Column("seq_count", sa.BigInteger(), nullable=False),
        sa.Column("record_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_seqs"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "seq_missing",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("hi", sa.BigInteger(), nullable=False),
        sa.Column("lo", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "hi", name="pk_seq_missing"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "seq_repeats",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", "record_id", "ts", name="pk_seq_repeats"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "cloud_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cloud_state"),
    )


def _backfill(dialect: str) -> None:
    for grain in RECORD_GRAINS:
        op.execute(
            "INSERT INTO prediction_rollups (grain, bucket, device_id, version_key, n,"
            " min_seq, max_seq, min_ts, max_ts, max_received_at)"
            f" SELECT {grain}, {_bucket_sql('ts', grain, dialect)}, device_id,"
            " COALESCE('=' || model_version, ''), count(*), min(seq), max(seq), min(ts),"
            " max(ts), max(received_at) FROM predictions GROUP BY 2, 3, 4"
        )
    for grain in DETECTION_GRAINS:
        op.execute(
            "INSERT INTO detection_rollups (grain, bucket, device_id, class_name, n)"
            f" SELECT {grain}, {_bucket_sql('bucket', grain, dialect)}, device_id,"
            " class_name, sum(n) FROM detection_counts GROUP BY 2, 3, 4"
        )
    op.execute(
        "INSERT INTO seq_missing (device_id, hi, lo)"
        " SELECT device_id, seq - 1, COALESCE(prev, 0) + 1 FROM ("
        "  SELECT device_id, seq, lag(seq) OVER (PARTITION BY device_id ORDER BY seq) AS prev"
        "  FROM (SELECT DISTINCT device_id, seq FROM predictions) AS d) AS l"
        " WHERE seq - COALESCE(prev, 0) > 1"
    )
    op.execute(
        "INSERT INTO device_seqs (device_id, max_seq, contiguous_through, seq_count,"
        " record_count)"
        " SELECT device_id, max(seq), 0, count(DISTINCT seq), count(*) FROM predictions"
        " GROUP BY device_id"
    )
    op.execute(
        "UPDATE device_seqs SET contiguous_through = COALESCE((SELECT min(m.lo) - 1"
        " FROM seq_missing m WHERE m.device_id = device_seqs.device_id), max_seq)"
    )
    op.execute(
        "INSERT INTO seq_repeats (device_id, seq, record_id, ts)"
        " SELECT p.device_id, p.seq, p.record_id, p.ts FROM predictions p JOIN ("
        "  SELECT device_id, seq FROM predictions GROUP BY device_id, seq"
        "  HAVING count(*) > 1) AS r ON r.device_id = p.device_id AND r.seq = p.seq"
    )


def _partition_postgres() -> None:
    conn = op.get_bind()
    op.execute("ALTER TABLE predictions RENAME TO predictions_0002")
    op.execute(
        "ALTER TABLE predictions_0002 RENAME CONSTRAINT pk_predictions TO pk_predictions_0002"
    )
    op.execute(
        "ALTER TABLE predictions_0002 RENAME CONSTRAINT"
        " uq_predictions_device_id_record_id TO uq_predictions_0002_device_record"
    )
    for index in ("ix_predictions_device_id_seq", "ix_predictions_device_id_ts"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_0002")
    op.execute("ALTER SEQUENCE predictions_id_seq OWNED BY NONE")
    op.execute(
        "CREATE TABLE predictions ("
        " id BIGINT NOT NULL DEFAULT nextval('predictions_id_seq'),"
        " device_id VARCHAR(128) NOT NULL, record_id VARCHAR(64) NOT NULL,"
        " seq BIGINT NOT NULL, image_id VARCHAR(256), ts DOUBLE PRECISION NOT NULL,"
        " model_version VARCHAR(128), prediction TEXT NOT NULL,"
        " received_at DOUBLE PRECISION NOT NULL, batch_id VARCHAR(64) NOT NULL,"
        " CONSTRAINT pk_predictions PRIMARY KEY (device_id, record_id, ts)"
        ") PARTITION BY RANGE (ts)"
    )
    op.execute("CREATE TABLE predictions_default PARTITION OF predictions DEFAULT")
    days = (
        conn.execute(
            sa.text(
                "SELECT DISTINCT floor(ts / 86400)::bigint FROM predictions_0002"
                " WHERE ts >= :first AND ts < :last ORDER BY 1"
            ),
            {"first": FIRST_DAY * DAY, "last": LAST_DAY * DAY},
        )
        .scalars()
        .all()
    )
    for day in days:
        name = f"predictions_p{_day_name(int(day))}"
        op.execute(
            f"CREATE TABLE {name} PARTITION OF predictions"
            f" FOR VALUES FROM ({int(day) * DAY}) TO ({(int(day) + 1) * DAY})"
        )
    op.execute(f"INSERT INTO predictions ({COLUMNS}) SELECT {COLUMNS} FROM predictions_0002")
    op.execute("CREATE INDEX ix_predictions_id ON predictions (id)")
    op.execute("CREATE INDEX ix_predictions_device_id_seq ON predictions (device_id, seq)")
    op.execute("CREATE INDEX ix_predictions_device_id_ts ON predictions (device_id, ts)")
    op.execute("ALTER SEQUENCE predictions_id_seq OWNED BY predictions.id")
    op.execute("DROP TABLE predictions_0002")


def _day_name(day: int) -> str:
    import datetime

    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=day)).strftime("%Y%m%d")


def upgrade() -> None:
    """Create and fill the derived tables; partition `predictions` on PostgreSQL."""
    dialect = op.get_context().dialect.name
    op.drop_index("ix_predictions_model_version", table_name="predictions")
    if dialect == "postgresql":
        _partition_postgres()
    _create_tables()
    _backfill(dialect)


def downgrade() -> None:
    """Back to one plain `predictions` table; the derived tables go (nothing is lost)."""
    dialect = op.get_context().dialect.name
    for table in (
        "cloud_state",
        "seq_repeats",
        "seq_missing",
        "device_seqs",
        "detection_rollups",
        "prediction_rollups",
    ):
        op.drop_table(table)
    if dialect == "postgresql":
        op.execute("ALTER TABLE predictions RENAME TO predictions_0003")
        op.execute(
            "ALTER TABLE predictions_0003 RENAME CONSTRAINT pk_predictions TO pk_predictions_0003"
        )
        for index in (
            "ix_predictions_id",
            "ix_predictions_device_id_seq",
            "ix_predictions_device_id_ts",
        ):
            op.execute(f"ALTER INDEX {index} RENAME TO {index}_0003")
        op.execute("ALTER SEQUENCE predictions_id_seq OWNED BY NONE")
        op.execute(
            "CREATE TABLE predictions ("
            " id BIGINT NOT NULL DEFAULT nextval('predictions_id_seq'),"
            " device_id VARCHAR(128) NOT NULL, record_id VARCHAR(64) NOT NULL,"
            " seq BIGINT NOT NULL, image_id VARCHAR(256), ts DOUBLE PRECISION NOT NULL,"
            " model_version VARCHAR(128), prediction TEXT NOT NULL,"
            " received_at DOUBLE PRECISION NOT NULL, batch_id VARCHAR(64) NOT NULL,"
            " CONSTRAINT pk_predictions PRIMARY KEY (id),"
            " CONSTRAINT uq_predictions_device_id_record_id UNIQUE (device_id, record_id))"
        )
        # Two records that differ only in ts (possible under 0003's key) cannot both go
        # back under (device_id, record_id): the first stored one is kept.
        op.execute(
            f"INSERT INTO predictions ({COLUMNS}) SELECT {COLUMNS}"
            " FROM predictions_0003 ORDER BY id ON CONFLICT DO NOTHING"
        )
        op.execute("ALTER SEQUENCE predictions_id_seq OWNED BY predictions.id")
        op.execute("DROP TABLE predictions_0003")
        op.execute("CREATE INDEX ix_predictions_device_id_seq ON predictions (device_id, seq)")
        op.execute("CREATE INDEX ix_predictions_device_id_ts ON predictions (device_id, ts)")
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
