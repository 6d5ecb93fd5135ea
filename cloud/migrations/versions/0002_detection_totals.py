"""Detections per class as running totals per (device, second, class).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-29

Revision 0001 kept one `detection_counts` row per stored record and class (three or four
rows per typical record, on the insert's hot path). This revision replaces it with one row
per (device_id, bucket = floor(timestamp), class_name) holding the sum `n`, filled from
the old rows joined to their records' timestamps. The downgrade rebuilds the per-record
rows from the stored predictions themselves (slow on a big database, but exact).

Written out in full rather than imported from `cloud.schema`/`cloud.ingest`, so later
changes there can never silently change what this revision did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# floor(ts) as a double, in SQL. SQLite's floor() exists only in builds with the math
# functions; a cast truncates toward zero (exact below 2**63), and beyond ±9e18 every
# double is an integer already.
_FLOOR_TS = {
    "postgresql": "floor(p.ts)",
    "sqlite": (
        "CASE WHEN p.ts >= 9.0e18 OR p.ts <= -9.0e18 THEN p.ts"
        " ELSE CAST(p.ts AS INTEGER) - (p.ts < CAST(p.ts AS INTEGER)) END"
    ),
}


def _rename(old: str, new: str) -> None:
    op.rename_table(old, new)
    if op.get_context().dialect.name == "postgresql":
        # The primary key's index is a relation of its own there; free its name.
        op.execute(f'ALTER TABLE "{new}" RENAME CONSTRAINT "pk_{old}" TO "pk_{new}"')


def upgrade() -> None:
    """Replace per-record class counts by per-second totals, keeping every count."""
    _rename("detection_counts", "detection_counts_0001")
    op.create_table(
        "detection_counts",
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("bucket", sa.Double(), nullable=False),
        sa.Column("class_name", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "bucket", "class_name", name="pk_detection_counts"),
        sqlite_with_rowid=False,
    )
    floor_ts = _FLOOR_TS[op.get_context().dialect.name]
    op.execute(
        "INSERT INTO detection_counts (device_id, bucket, class_name, n)"
        f" SELECT d.device_id, {floor_ts}, d.class_name, sum(d.n)"
        " FROM detection_counts_0001 d JOIN predictions p ON p.id = d.record_pk"
        f" GROUP BY d.device_id, {floor_ts}, d.class_name"
    )
    op.drop_table("detection_counts_0001")


# ---------------------------------------------------------------------- downgrade
_CLASS_KEYS = ("class_name", "class", "name")


def _count_classes(prediction: Any) -> dict[str, int]:
    """Revision 0001's per-record count (as `cloud.ingest.count_classes` was then)."""
    detections = prediction.get("detections") if isinstance(prediction, dict) else None
    if not isinstance(detections, list):
        return {}
    counts: dict[str, int] = {}
    for detection in detections:
        if not isinstance(detection, dict):
            continue
        name: Any = None
        for key in _CLASS_KEYS:
            name = detection.get(key)
            if name is not None:
                break
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            continue
        label = str(name).replace("\x00", "")[:256]
        counts[label] = counts.get(label, 0) + 1
    return counts


def downgrade() -> None:
    """Back to one row per (record, class), recounted from the stored predictions."""
    import json

    _rename("detection_counts", "detection_counts_0002")
    old = op.create_table(
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
    assert old is not None
    conn = op.get_bind()
    page = sa.text(
        "SELECT id, device_id, prediction FROM predictions WHERE id > :after ORDER BY id LIMIT 5000"
    )
    after = 0
    while True:
        records = conn.execute(page, {"after": after}).all()
        if not records:
            break
        rows = [
            {"record_pk": pk, "class_name": name, "device_id": device_id, "n": n}
            for pk, device_id, text in records
            for name, n in _count_classes(json.loads(text)).items()
        ]
        if rows:
            conn.execute(old.insert(), rows)
        after = records[-1][0]
    op.drop_table("detection_counts_0002")
