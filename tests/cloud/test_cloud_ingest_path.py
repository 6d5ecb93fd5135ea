"""The optimised ingest path: fast body parsing, per-second class totals, migration 0002.

* `cloud.wire`'s fast path may only ever accept what `LogBatch` accepts, with the same
  values (a property test over bodies built from plain and awkward field values);
* detections per class come from per-(device, second, class) totals, which must give the
  exact per-record answer for any time window, including bounds inside a second;
* revision 0002 turns revision 0001's per-record rows into those totals, and back;
* the PostgreSQL pool replaces a connection that died while idle without a failed request.
"""

from __future__ import annotations

import json
import math
import random
import time

import psycopg
import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import from_json
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cloud import migrate
from cloud.db import create_db_engine
from cloud.ingest import count_classes
from cloud.models import batch_model
from cloud.settings import CloudSettings
from cloud.wire import _fast, parse_batch

MAX_RECORDS = 5

# ----------------------------------------------------------------------- fast path
_TEXT = st.one_of(
    st.text(max_size=3),
    st.sampled_from(
        [
            "",
            "a",
            "x" * 64,
            "x" * 65,
            "x" * 128,
            "x" * 129,
            "x" * 256,
            "x" * 257,
            "nul\x00",
            "é" * 64,
            "ok\n",
        ]
    ),
)
_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    _TEXT,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 1.5, 1e308, -0.0, 5e-324]),
    st.sampled_from(["2025-11-28T22:46:42Z", "1764370000.5", "soon", "nan", "inf"]),
    st.just({"detections": []}),
    st.just([1, 2]),
)
_FIELDS = ("record_id", "seq", "image_id", "timestamp", "model_version", "prediction")


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    records = []
    for _ in range(draw(st.integers(min_value=0, max_value=MAX_RECORDS + 1))):
        record = {
            "record_id": draw(st.sampled_from(["r1", "r2"])),
            "seq": 1,
            "timestamp": 1_764_370_000.25,
            "prediction": {"detections": []},
        }
        for field in draw(st.lists(st.sampled_from(_FIELDS), max_size=3, unique=True)):
            if draw(st.booleans()):
                record.pop(field, None)
            else:
                record[field] = draw(_VALUE)
        records.append(record if draw(st.integers(0, 20)) else draw(_VALUE))
    body = {
        "device_id": draw(
            st.sampled_from(["cam-1", "a:b@c.d_e", "", "bad/id", "x" * 129, "cam-1\n", "ü"])
        ),
        "batch_id": draw(st.sampled_from(["b", "", "b" * 65, "b\x00"])),
        "records": records,
    }
    if draw(st.integers(0, 10)) == 0:
        body.pop(draw(st.sampled_from(["device_id", "batch_id", "records"])))
    return json.dumps(body).encode()


def _via_model(body: bytes) -> tuple | None:
    try:
        parsed = batch_model(MAX_RECORDS).model_validate_json(body)
    except ValidationError:
        return None
    return (
        parsed.device_id,
        parsed.batch_id,
        [
            (r.record_id, r.seq, r.image_id, r.timestamp, r.model_version, r.prediction)
            for r in parsed.records
        ],
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_fast_path_accepts_only_what_the_model_accepts_and_alike(body):
    fast = _fast(from_json(body, allow_inf_nan=False), MAX_RECORDS)
    model = _via_model(body)
    if fast is not None:
        assert model is not None, body
        assert (fast.device_id, fast.batch_id, fast.records) == model
        for mine, theirs in zip(fast.records, model[2]):
            assert [type(v) for v in mine] == [type(v) for v in theirs]
    # And whichever path decides, parse_batch agrees with the model.
    if model is None:
        with pytest.raises(ValidationError):
            parse_batch(body, batch_model(MAX_RECORDS), MAX_RECORDS)
    else:
        batch = parse_batch(body, batch_model(MAX_RECORDS), MAX_RECORDS)
        assert (batch.device_id, batch.batch_id, batch.records) == model


def test_plain_body_takes_the_fast_path(helpers):
    body = helpers.dumps(helpers.batch("cam-1", helpers.seq_records(1, 3)))
    assert _fast(from_json(body), MAX_RECORDS) is not None


@pytest.mark.parametrize("literal", [b"1e999", b"-1e999"])
def test_number_too_large_for_a_double_is_422_not_stored_as_infinity(api, helpers, literal):
    body = helpers.dumps(helpers.batch("cam-1", [helpers.record("r1")]))
    answer = api.post(
        "/log",
        content=body.replace(b'"confidence": 0.9', b'"confidence": ' + literal),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "records", 0, "prediction"]
    assert api.get("/stats").json()["total_records"] == 0


def test_the_word_infinity_in_a_string_is_stored(api, helpers):
    rec = helpers.record("r1", classes=("Infinity,", "-Infinity]", "Infinity}"))
    assert api.post("/log", json=helpers.batch("cam-1", [rec])).json()["accepted"] == 1
    [item] = api.get("/predictions").json()["items"]
    assert item["prediction"] == rec["prediction"]


# ----------------------------------------------------------------------- class totals
T0 = 1_764_370_000.0
_CLASSES = ("part", "defect", "bolt")


def _random_records(rng: random.Random, device: str, n: int, start: float) -> list[dict]:
    records = []
    for i in range(n):
        classes = tuple(rng.choice(_CLASSES) for _ in range(rng.randint(0, 3)))
        ts = start + rng.choice([0.0, 0.25, 0.5, 0.999, 1.0]) + rng.randint(0, 5)
        records.append(
            {
                "record_id": f"{device}-{i}",
                "seq": i + 1,
                "timestamp": ts,
                "prediction": {"detections": [{"class_name": c} for c in classes]},
            }
        )
    return records


def _expected(
    records_by_device: dict[str, list[dict]],
    device: str | None,
    since: float | None,
    until: float | None,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for dev, records in records_by_device.items():
        if device is not None and dev != device:
            continue
        for record in records:
            ts = record["timestamp"]
            if (since is None or ts >= since) and (until is None or ts < until):
                for name, n in count_classes(record["prediction"]).items():
                    counts[name] = counts.get(name, 0) + n
    return counts


def test_detections_per_class_are_exact_for_any_window(api, helpers):
    rng = random.Random(11)
    stored: dict[str, list[dict]] = {}
    for device in ("cam-1", "cam-2"):
        records = _random_records(rng, device, 60, T0)
        stored[device] = records
        # Overlapping batches and in-batch repeats: every record must count once.
        for batch in (records[:30], records[20:45], records[40:] + records[40:45]):
            assert api.post("/log", json=helpers.batch(device, batch)).status_code == 200
    bounds = [
        None,
        T0,
        T0 + 0.25,
        T0 + 0.5,
        T0 + 0.9999,
        T0 + 1,
        T0 + 2.5,
        T0 + 3,
        T0 + 5.999,
        T0 + 7,
    ]
    for since in bounds:
        for until in bounds:
            for device in (None, "cam-2"):
                params = {
                    k: v
                    for k, v in (("since", since), ("until", until), ("device_id", device))
                    if v is not None
                }
                got = api.get("/stats", params=params).json()["detections_per_class"]
                assert got == _expected(stored, device, since, until), params
                assert list(got) == sorted(got)


def test_partial_duplicates_count_only_the_new_records(api, helpers):
    first = [helpers.record(f"r{i}", i, timestamp=T0 + i, classes=("a",)) for i in range(1, 4)]
    api.post("/log", json=helpers.batch("cam-1", first))
    # r2 again but with other classes (a retry never changes a stored record), plus r9.
    again = [
        helpers.record("r2", 2, timestamp=T0 + 2, classes=("b", "b")),
        helpers.record("r9", 9, timestamp=T0 + 2.5, classes=("c",)),
    ]
    answer = api.post("/log", json=helpers.batch("cam-1", again)).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 1)
    assert api.get("/stats").json()["detections_per_class"] == {"a": 3, "c": 1}


# ----------------------------------------------------------------------- migration 0002
def _engine(url: str):
    return create_db_engine(CloudSettings(database_url=url))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db"
    return request.getfixturevalue("pg_database_factory")()


def test_upgrade_from_0001_keeps_every_count_and_downgrade_rebuilds_them(empty_url):
    engine = _engine(empty_url)
    try:
        migrate.upgrade(engine, "0001")
        rows = [  # (device, record_id, ts, prediction)
            ("cam-1", "r1", -1.5, {"detections": [{"class_name": "a"}, {"class": 3}]}),
            ("cam-1", "r2", -1.0, {"detections": [{"class_name": "a"}]}),
            ("cam-1", "r3", T0 + 0.75, {"detections": [{"name": "b"}, {"class_name": "a"}]}),
            ("cam-1", "r4", T0 + 0.25, {"detections": [{"class_name": "a"}]}),
            ("cam-2", "r1", T0 + 0.5, {"detections": ["junk", {"class_name": "a"}]}),
            ("cam-2", "r5", 2.0**60 + 4096, {"detections": [{"class_name": "a"}]}),
        ]
        with engine.begin() as conn:
            for pk, (device, record_id, ts, prediction) in enumerate(rows, start=1):
                conn.execute(
                    text(
                        "INSERT INTO predictions (id, device_id, record_id, seq, ts, prediction,"
                        " received_at, batch_id) VALUES (:id, :d, :r, 1, :ts, :p, 0, 'b')"
                    ),
                    {"id": pk, "d": device, "r": record_id, "ts": ts, "p": json.dumps(prediction)},
                )
                for name, n in count_classes(prediction).items():
                    conn.execute(
                        text(
                            "INSERT INTO detection_counts (record_pk, class_name, device_id, n)"
                            " VALUES (:pk, :c, :d, :n)"
                        ),
                        {"pk": pk, "c": name, "d": device, "n": n},
                    )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            totals = sorted(
                conn.execute(
                    text("SELECT device_id, bucket, class_name, n FROM detection_counts")
                ).all()
            )
        assert totals == sorted(
            [
                ("cam-1", -2.0, "3", 1),
                ("cam-1", -2.0, "a", 1),
                ("cam-1", -1.0, "a", 1),
                ("cam-1", T0, "a", 2),
                ("cam-1", T0, "b", 1),
                ("cam-2", T0, "a", 1),
                ("cam-2", 2.0**60 + 4096, "a", 1),
            ]
        )
        assert all(bucket == math.floor(bucket) for _, bucket, _, _ in totals)

        with engine.begin() as conn:
            cfg = migrate.alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            back = sorted(
                conn.execute(
                    text("SELECT record_pk, class_name, device_id, n FROM detection_counts")
                ).all()
            )
        assert back == sorted(
            (pk, name, device, n)
            for pk, (device, _, _, prediction) in enumerate(rows, start=1)
            for name, n in count_classes(prediction).items()
        )
    finally:
        engine.dispose()


# ----------------------------------------------------------------------- connections
@pytest.mark.postgres
@pytest.mark.parametrize("idle", [0.2, 1000.0])
def test_connection_killed_while_idle(pg_database_factory, helpers, idle):
    """Idle past `db_ping_after_idle`: pinged and replaced, the request succeeds. Killed
    sooner: that request is a retryable 503, and the pool then starts afresh."""
    from fastapi.testclient import TestClient

    from cloud.app import create_app

    url = pg_database_factory()
    app = create_app(CloudSettings(database_url=url, db_ping_after_idle=idle))
    with TestClient(app) as api:
        assert api.post("/log", json=helpers.batch("c", [helpers.record("r1")])).status_code == 200
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'edgebuf-cloud' AND datname = current_database()"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        time.sleep(0.3)
        body = helpers.batch("c", [helpers.record("r2")])
        answer = api.post("/log", json=body)
        if idle > 1:
            assert answer.status_code == 503 and answer.headers["Retry-After"]
            answer = api.post("/log", json=body)
        assert answer.status_code == 200, answer.text
        assert api.get("/stats").json()["total_records"] == 2


def test_sqlite_checkpointer_runs_and_stops_with_the_app(make_cloud_client, helpers, tmp_path):
    api = make_cloud_client(database_url=f"sqlite:///{tmp_path}/c.db")
    assert api.post("/log", json=helpers.batch("c", [helpers.record("r1")])).status_code == 200
    checkpointer = api.app.state.cloud.db.checkpointer
    assert checkpointer is not None and checkpointer._thread is not None
    thread = checkpointer._thread
    api.app.state.cloud.db.dispose()
    assert not thread.is_alive()


# ----------------------------------------------------------------------- group commit
def test_group_commit_isolates_a_failing_batch(tmp_path, monkeypatch):
    """Batches queued behind the SQLite write lock go in one transaction; one that fails
    is rolled back to its savepoint alone and answered 503, the others are stored."""
    import threading

    from sqlalchemy import exc as sa_exc

    from cloud.app import _prepare_schema
    from cloud.errors import ServiceUnavailable
    from cloud.state import CloudState
    from cloud.wire import Batch

    state = CloudState.build(CloudSettings(database_url=f"sqlite:///{tmp_path}/g.db"))
    try:
        _prepare_schema(state)
        store = state.store
        real = store._writer.insert_records

        def flaky(conn, rows, totals):
            result = real(conn, rows, totals)  # writes, then fails: must be undone
            if rows[0][0] == "bad":
                raise sa_exc.OperationalError("INSERT", None, Exception("disk I/O error"))
            return result

        monkeypatch.setattr(store._writer, "insert_records", flaky)

        def batch(device: str) -> Batch:
            return Batch(
                device,
                "b",
                [
                    (
                        f"{device}-{i}",
                        i + 1,
                        None,
                        T0 + i,
                        None,
                        {"detections": [{"class_name": device}]},
                    )
                    for i in range(3)
                ],
            )

        outcomes: dict[str, object] = {}

        def post(device: str) -> None:
            try:
                outcomes[device] = store.store(batch(device), received_at=T0).accepted
            except ServiceUnavailable as error:
                outcomes[device] = error

        with state.db.write_lock:  # hold the writers back so that they queue up
            threads = [threading.Thread(target=post, args=(d,)) for d in ("a", "bad", "c")]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(store._queue) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(store._queue) == 3
        for thread in threads:
            thread.join(timeout=30)
        assert outcomes["a"] == 3 and outcomes["c"] == 3
        assert isinstance(outcomes["bad"], ServiceUnavailable)
        with state.db.engine.connect() as conn:
            devices = conn.execute(
                text("SELECT device_id, count(*) FROM predictions GROUP BY device_id")
            ).all()
            classes = conn.execute(
                text("SELECT class_name, sum(n) FROM detection_counts GROUP BY class_name")
            ).all()
        assert sorted(devices) == [("a", 3), ("c", 3)]
        assert sorted(classes) == [("a", 3), ("c", 3)]
    finally:
        state.db.dispose()
