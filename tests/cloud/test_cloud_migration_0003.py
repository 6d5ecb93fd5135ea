"""Migration 0003 on a populated revision-0002 database, both backends.

Rows written straight into the 0002 schema (gaps, repeated seqs, no model version, wild
timestamps, three days) must all survive the upgrade with their ids; afterwards the
back-filled rollups and seq state equal a recount, and `/stats`, `/devices/{id}/gaps`
and the watermark equal brute force over the rows. On PostgreSQL each day with rows has
its partition and the wild timestamps sit in the default one. The downgrade keeps them.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from alembic import command
from sqlalchemy import text

from cloud import migrate
from cloud.db import create_db_engine
from cloud.ingest import count_classes
from cloud.maintenance import partition_name
from cloud.settings import CloudSettings
from tests.cloud.test_cloud_rollups import (
    brute_stats,
    brute_watermark,
    derived,
    missing_ranges,
    recounted,
    stored_rows,
)

T0 = 1_764_370_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/old.db"
    return request.getfixturevalue("pg_database_factory")()


def _populate_0002(engine) -> list[dict]:
    rng = random.Random(2)
    rows, totals = [], {}
    pk = 0
    for device in ("cam-1", "cam-2", "cam-3"):
        seqs = [s for s in range(1, 200) if rng.random() > 0.15]
        seqs += rng.sample(seqs, 5)  # the same seq under a second record_id
        for number, seq in enumerate(seqs):
            pk += 1
            ts = T0 + rng.uniform(-DAYS * 86400, 86400)
            if device == "cam-3" and number < 3:
                ts = [2.0**60 + 4096, -1.5, 1e15][number]
            prediction = {
                "detections": [{"class_name": rng.choice("ab")} for _ in range(rng.randint(0, 3))]
            }
            row = {
                "id": pk,
                "device_id": device,
                "record_id": f"{device}-{number}",
                "seq": seq,
                "ts": ts,
                "model_version": rng.choice([None, "v1", "v2"]),
                "prediction": json.dumps(prediction),
                "received_at": T0 + pk,
                "batch_id": "b",
            }
            rows.append(row)
            for name, n in count_classes(prediction).items():
                key = (device, float(math.floor(ts)), name)
                totals[key] = totals.get(key, 0) + n
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO predictions (id, device_id, record_id, seq, image_id, ts,"
                " model_version, prediction, received_at, batch_id) VALUES (:id, :device_id,"
                " :record_id, :seq, NULL, :ts, :model_version, :prediction, :received_at,"
                " :batch_id)"
            ),
            rows,
        )
        conn.execute(
            text(
                "INSERT INTO detection_counts (device_id, bucket, class_name, n)"
                " VALUES (:d, :b, :c, :n)"
            ),
            [{"d": d, "b": b, "c": c, "n": n} for (d, b, c), n in totals.items()],
        )
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval('predictions_id_seq', :n)"), {"n": pk})
    return rows


DAYS = 3


def test_upgrade_of_a_populated_0002_database_keeps_and_backfills_everything(fresh_url, helpers):
    from fastapi.testclient import TestClient

    from cloud.app import create_app

    engine = create_db_engine(CloudSettings(database_url=fresh_url))
    try:
        migrate.upgrade(engine, "0002")
        old = _populate_0002(engine)
        migrate.upgrade(engine, "0003")
        assert migrate.current_revision(engine) == "0003"
        with engine.connect() as conn:
            ids = sorted(conn.execute(text("SELECT id FROM predictions")).scalars())
            assert ids == [row["id"] for row in old]
            if engine.dialect.name == "postgresql":
                parts = set(
                    conn.execute(
                        text(
                            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                            " WHERE i.inhparent = 'predictions'::regclass"
                        )
                    ).scalars()
                )
                days = {int(r["ts"] // 86400) for r in old if 0 <= r["ts"] < 4.1e9}
                assert {partition_name(day) for day in days} | {"predictions_default"} == parts
                wild = conn.execute(text("SELECT count(*) FROM predictions_default")).scalar()
                assert wild == 3
    finally:
        engine.dispose()

    with TestClient(
        create_app(CloudSettings(database_url=fresh_url, maintenance_interval=0))
    ) as api:
        assert derived(api) == recounted(api)
        rows = stored_rows(api)
        assert len(rows) == len(old)
        assert api.get("/stats").json() == brute_stats(rows)
        for since, until in ((T0 - 86400, T0), (T0 + 30.5, T0 + 7300.25), (-2.0, 0.0)):
            answer = api.get("/stats", params={"since": since, "until": until}).json()
            assert answer == brute_stats(rows, None, since, until)
        for device in ("cam-1", "cam-2", "cam-3"):
            held = {r["seq"] for r in rows if r["device_id"] == device}
            assert api.get(f"/devices/{device}/watermark").json() == brute_watermark(device, held)
            gaps = api.get(f"/devices/{device}/gaps").json()
            assert gaps["gaps"] == [r for r in missing_ranges(held) if r[0] > min(held)]
            assert gaps["count"] == sum(1 for r in rows if r["device_id"] == device)
        # Ingest goes on: new ids above the old ones, old records still de-duplicated.
        body = helpers.batch(
            "cam-1",
            [
                helpers.record("fresh", 500, timestamp=T0),
                helpers.record("cam-1-0", old[0]["seq"], timestamp=old[0]["ts"]),
            ],
        )
        assert api.post("/log", json=body).json()["accepted"] == 1
        page = api.get(
            "/predictions", params={"device_id": "cam-1", "since": T0, "until": T0 + 0.001}
        ).json()["items"]
        assert [item["record_id"] for item in page] == ["fresh"]
        assert derived(api) == recounted(api)

    engine = create_db_engine(CloudSettings(database_url=fresh_url))
    try:
        with engine.begin() as conn:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM predictions")).scalar() == len(old) + 1
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()
