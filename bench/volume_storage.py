"""Where a cloud database's bytes go: per table and per index, partitions summed.

For bench/cloud_volume.py. PostgreSQL: `pg_table_size` of every table (heap, TOAST, free
space and visibility maps) and `pg_relation_size` of every index, each day partition
counted under its parent (`predictions`) and each partition's index under the parent
index it belongs to; plus the average stored width of a `predictions` row and of its
columns (`pg_column_size`, over a 1% sample). SQLite: the pages of every table and index
(the `dbstat` table, summed page by page: its aggregate mode overflows 32 bits on a
table over 4 GB in SQLite 3.40), and the average length of each text column.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from cloud.db import create_db_engine
from cloud.settings import CloudSettings
from cloud.statements import RECORD_COLUMNS

__all__ = ["breakdown", "row_widths"]

COLUMNS = RECORD_COLUMNS  # the stored columns of a predictions row

_PG_RELATIONS = """
WITH rel AS (
    SELECT c.oid, c.relname, c.relkind,
           COALESCE(parent.relname, c.relname) AS family
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
    LEFT JOIN pg_class parent ON parent.oid = i.inhparent
    WHERE c.relkind IN ('r', 'i')
)
SELECT rel.family AS name,
       CASE rel.relkind WHEN 'r' THEN 'table' ELSE 'index' END AS kind,
       COALESCE(owner_family.family, rel.family) AS of_table,
       count(*) AS parts,
       sum(CASE rel.relkind WHEN 'r' THEN pg_table_size(rel.oid)
                ELSE pg_relation_size(rel.oid) END) AS bytes
FROM rel
LEFT JOIN pg_index x ON x.indexrelid = rel.oid
LEFT JOIN rel owner_family ON owner_family.oid = x.indrelid
GROUP BY 1, 2, 3
ORDER BY bytes DESC
"""


def breakdown(url: str) -> list[dict[str, Any]]:
    """[{name, kind ('table'/'index'), of_table, parts, bytes}], largest first."""
    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                rows = conn.execute(text(_PG_RELATIONS)).mappings().all()
                return [
                    {**row, "parts": int(row["parts"]), "bytes": int(row["bytes"])} for row in rows
                ]
            tables = dict(
                conn.execute(text("SELECT name, tbl_name FROM sqlite_master")).tuples().all()
            )
            kinds = dict(conn.execute(text("SELECT name, type FROM sqlite_master")).tuples().all())
            sizes = conn.execute(
                text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
            ).all()
            return [
                {
                    "name": name,
                    "kind": "index" if kinds.get(name, "index") == "index" else "table",
                    "of_table": tables.get(name, name),
                    "parts": 1,
                    "bytes": int(size),
                }
                for name, size in sizes
            ]
    finally:
        engine.dispose()


def row_widths(url: str) -> dict[str, float]:
    """Average stored bytes of a `predictions` row ('row', PostgreSQL) and of each column."""
    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                parts = ", ".join(f"avg(pg_column_size({c}))" for c in COLUMNS)
                query = f"SELECT avg(pg_column_size(p.*)), {parts}"
                query += " FROM predictions p TABLESAMPLE SYSTEM (1)"
                names = ["row", *COLUMNS]
            else:  # numbers take 1-8 bytes in SQLite's record format; texts their length
                names = [c for c in COLUMNS if c not in ("seq", "ts", "received_at")]
                parts = ", ".join(f"avg(length({c}))" for c in names)
                query = f"SELECT {parts} FROM (SELECT * FROM predictions LIMIT 100000)"
            values = conn.execute(text(query)).one()
            return {name: float(v) for name, v in zip(names, values) if v is not None}
    finally:
        engine.dispose()
