"""Migration 0004 (SQLite's key becomes (device_id, ts, record_id)) and the key it leaves.

A populated revision-0003 SQLite database keeps every row with its id through the
upgrade, ends with exactly the new key's index (and no (device_id, ts) index of its own),
and still refuses re-sends; ingest then goes on with ids above the old ones. The
downgrade keeps the rows too. On both backends a record is now one per (device_id,
record_id, timestamp): a re-send (same timestamp) is a duplicate, the same id with another
timestamp is another record, as PostgreSQL's partitioned key has had it since 0003.
"""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from cloud import migrate
from cloud.db import create_db_engine
from cloud.rollups import rebuild
from cloud.settings import CloudSettings
from tests.cloud.test_cloud_rollups import derived, recounted

T0 = 1_764_370_000.0


def _indexes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"),
            {"t": "predictions"},
        ).all()
    return {name: sql or "" for name, sql in rows}


def _key_columns(engine) -> list[list[str]]:
    """The columns, in order, of every unique index of `predictions`."""
    with engine.connect() as conn:
        uniques = [
            row[1]
            for row in conn.execute(text("PRAGMA index_list(predictions)"))
            if row[2]  # unique
        ]
        return [
            [row[2] for row in conn.execute(text(f"PRAGMA index_info('{name}')"))]
            for name in uniques
        ]


def _rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT id, device_id, record_id, seq, image_id, ts, model_version,"
                    " prediction, received_at, batch_id FROM predictions ORDER BY id"
                )
            )
        )


def test_upgrade_of_a_populated_0003_sqlite_database_keeps_every_row(tmp_path, helpers):
    from fastapi.testclient import TestClient

    from cloud.app import create_app

    url = f"sqlite:///{tmp_path}/old.db"
    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        migrate.upgrade(engine, "0003")
        assert _key_columns(engine) == [["device_id", "record_id"]]
        assert "ix_predictions_device_id_ts" in _indexes(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO predictions (id, device_id, record_id, seq, image_id, ts,"
                    " model_version, prediction, received_at, batch_id) VALUES (:id, :d, :r,"
                    " :s, :i, :ts, :v, :p, :at, 'b')"
                ),
                [
                    {
                        "id": 10 + 3 * n,  # gaps in the ids: they must be kept, not renumbered
                        "d": f"cam-{n % 3}",
                        "r": f"r{n}",
                        "s": n + 1,
                        "i": None if n % 4 else f"frame-{n}",
                        "ts": T0 + n * 0.25,
                        "v": None if n % 5 == 0 else "v1",
                        "p": json.dumps({"detections": []}),
                        "at": T0 + 1000 + n,
                    }
                    for n in range(60)
                ],
            )
            rebuild(conn)  # the derived tables of those rows, as ingest would have kept them
        before = _rows(engine)
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == "0004"
        assert _rows(engine) == before
        assert _key_columns(engine) == [["device_id", "ts", "record_id"]]
        assert set(_indexes(engine)) == {
            "sqlite_autoindex_predictions_1",
            "ix_predictions_device_id_seq",
        }
    finally:
        engine.dispose()

    with TestClient(create_app(CloudSettings(database_url=url, maintenance_interval=0))) as api:
        resend = helpers.record("r3", 4, timestamp=T0 + 0.75)  # stored above as cam-0's r3
        fresh = helpers.record("new", 100, timestamp=T0 + 99)
        answer = api.post("/log", json=helpers.batch("cam-0", [resend, fresh])).json()
        assert (answer["accepted"], answer["duplicates"]) == (1, 1)
        with api.app.state.cloud.db.engine.connect() as conn:
            new_id = conn.execute(text("SELECT id FROM predictions WHERE record_id = 'new'"))
            assert new_id.scalar() > before[-1][0]
        assert derived(api) == recounted(api)

    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.begin() as conn:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
        assert _key_columns(engine) == [["device_id", "record_id"]]
        assert "ix_predictions_device_id_ts" in _indexes(engine)
        assert len(_rows(engine)) == len(before) + 1
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_a_record_is_one_per_device_record_id_and_timestamp_on_both_backends(api, helpers):
    first = helpers.record("r1", 1, timestamp=T0)
    answer = api.post("/log", json=helpers.batch("cam", [first])).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    # The edge's re-send: the same record, timestamp unchanged.
    answer = api.post("/log", json=helpers.batch("cam", [first])).json()
    assert (answer["accepted"], answer["duplicates"]) == (0, 1)
    # Another device may use the same id; the same id at another time is another record.
    answer = api.post("/log", json=helpers.batch("cam-2", [first])).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    moved = helpers.record("r1", 2, timestamp=T0 + 1)
    answer = api.post("/log", json=helpers.batch("cam", [moved])).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    assert api.get("/stats", params={"device_id": "cam"}).json()["total_records"] == 2
