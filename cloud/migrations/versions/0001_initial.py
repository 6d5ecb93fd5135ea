"""Create the predictions table and its detections-per-class child table.

Revision ID: 0001
Revises:
Create Date: 2025-11-28

Written out in full rather than imported from `cloud.schema`, so later changes to the
metadata can never silently change what this revision did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create both tables and their indexes."""
    op.create_table(
        "predictions",
        sa.Column("id", PK, primary_key=True, autoincrement=True),
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
        sa.UniqueConstraint("device_id", "record_id", name="uq_predictions_device_id_record_id"),
    )
    op.create_index("ix_predictions_device_id_seq", "predictions", ["device_id", "seq"])
    op.create_index("ix_predictions_device_id_ts", "predictions", ["device_id", "ts"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])

    op.create_table(
        "detection_counts",
        sa.Column("record_pk", PK, nullable=False),
        sa.Column("class_name", sa.Text(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("record_pk", "class_name", name="pk_detection_counts"),
        sa.ForeignKeyConstraint(
            ["record_pk"],
            ["predictions.id"],
            name="fk_detection_counts_record_pk_predictions",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    """Drop both tables (all stored predictions are lost)."""
    op.drop_table("detection_counts")
    op.drop_table("predictions")
