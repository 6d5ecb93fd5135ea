"""bench/cloud_volume.py's fast fill gives what ingest through `POST /log` gives.

The benchmark writes its millions of rows with generate_series (PostgreSQL) or a bare
executemany (SQLite) plus its own SQL for the per-second detection totals, then
`cloud.rollups.rebuild` for the rollups and the seq state. Here the same records go
once through that fill and once through the real service, in two steps each (as the
benchmark grows its table); every stored row and every derived table must be equal
(except `received_at`, which the service stamps with its clock).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from cloud.rollups import DERIVED_TABLES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cloud_volume  # noqa: E402

BASE = 1_764_370_000.0
DEVICES = 3
STEPS = ((0, 500), (500, 1_200))


def _tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from cloud.db import create_db_engine
    from cloud.settings import CloudSettings

    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.connect() as conn:
            out = {
                "predictions": sorted(
                    tuple(r)
                    for r in conn.execute(
                        text(
                            "SELECT device_id, record_id, seq, image_id, ts, model_version, prediction"
                            " FROM predictions"
                        )
                    )
                ),
                "detection_counts": sorted(
                    tuple(r) for r in conn.execute(text("SELECT * FROM detection_counts"))
                ),
            }
            for table in DERIVED_TABLES:
                rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
                out[table] = sorted(
                    tuple(v for k, v in row.items() if k != "max_received_at") for row in rows
                )
        return out
    finally:
        engine.dispose()


def _indexes(url: str) -> dict[str, set[tuple[str, str]]]:
    """Per table: (index name, definition), as the database itself spells them."""
    from cloud.db import create_db_engine
    from cloud.settings import CloudSettings

    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                query = "SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index'"
            else:
                query = (
                    "SELECT tablename, indexname, indexdef FROM pg_indexes"
                    " WHERE schemaname = current_schema()"
                )
            out: dict[str, set[tuple[str, str]]] = {}
            for table, name, ddl in conn.execute(text(query)):
                out.setdefault(table, set()).add((name, ddl or ""))
            return out
    finally:
        engine.dispose()


def test_the_benchmarks_fill_equals_ingest_through_the_service(
    database_url, make_cloud_client, request, monkeypatch
):
    monkeypatch.setattr(cloud_volume, "GAP_EVERY", 400)  # gaps inside this small fill too
    # The service's copy, on the parametrized backend ...
    api = make_cloud_client()
    texts = cloud_volume.templates()
    for k0, k1 in STEPS:
        for index in range(DEVICES):
            for start in range(k0, k1, 400):
                records = ",".join(
                    cloud_volume.wire_record(BASE, index, k, texts)
                    for k in range(start, min(k1, start + 400))
                )
                body = (
                    f'{{"device_id":"{cloud_volume.device_name(index)}",'
                    f'"batch_id":"b{index}-{start}","records":[{records}]}}'
                )
                answer = api.post(
                    "/log", content=body, headers={"content-type": "application/json"}
                )
                assert answer.status_code == 200, answer.text
    served = _tables(database_url)
    # ... and the benchmark's fill into a second database of the same backend.
    if database_url.startswith("sqlite"):
        other = database_url.replace("cloud.db", "filled.db")
    else:
        other = request.getfixturevalue("pg_database_factory")()
    cloud_volume.prepare(other, BASE)
    for k0, k1 in STEPS:
        cloud_volume.fill(other, BASE, DEVICES, k0, k1)
    filled = _tables(other)
    assert len(filled["predictions"]) == DEVICES * STEPS[-1][1]
    assert filled["seq_missing"]  # the gaps are there
    for table in served:
        assert filled[table] == served[table], table
    # The fill may drop and rebuild indexes to go faster: it must leave the same ones.
    served_ix, filled_ix = _indexes(database_url), _indexes(other)
    common = served_ix.keys() & filled_ix.keys()
    assert "predictions" in common
    if not database_url.startswith("sqlite"):
        assert "predictions_default" in common  # a partition: its indexes cascade
    for table in common:
        assert filled_ix[table] == served_ix[table], table
