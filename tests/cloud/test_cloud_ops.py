"""Health, readiness, metrics, the OpenAPI document, and 503s when the database fails.

A database outage must answer 503 with Retry-After (the edge retries) and leave nothing
half-written; it must never look like a client error (which the edge would drop).
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url


def samples(api) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(api.get("/metrics").text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def assert_503(answer, reason: str | None = None) -> None:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) >= 0
    if reason:
        assert reason in answer.json()["detail"]


def test_health_get_and_head(api):
    assert api.get("/health").json() == {"status": "ok"}
    head = api.head("/health")
    assert head.status_code == 200 and head.content == b""


def test_ready(api):
    answer = api.get("/ready")
    assert answer.status_code == 200 and answer.json()["status"] == "ready"


def test_metrics_count_requests_records_and_latency(api, helpers):
    body = helpers.batch("cam-1", helpers.seq_records(1, 3))
    api.post("/log", json=body)
    api.post("/log", json=body)
    api.post("/log", json={"bad": 1})
    api.get("/devices/x/gaps")
    api.get("/no/such/path")
    found = samples(api)
    assert found[("edgebuf_cloud_records_accepted_total", ())] == 3
    assert found[("edgebuf_cloud_records_duplicate_total", ())] == 3
    assert found[("edgebuf_cloud_batches_total", ())] == 2
    assert found[("edgebuf_cloud_batch_seconds_count", ())] == 2
    log_ok = (("method", "POST"), ("path", "/log"), ("status", "200"))
    assert found[("edgebuf_cloud_requests_total", log_ok)] == 2
    log_bad = (("method", "POST"), ("path", "/log"), ("status", "422"))
    assert found[("edgebuf_cloud_requests_total", log_bad)] == 1
    gaps = (("method", "GET"), ("path", "/devices/{device_id}/gaps"), ("status", "404"))
    assert found[("edgebuf_cloud_requests_total", gaps)] == 1
    unmatched = (("method", "GET"), ("path", "<unmatched>"), ("status", "404"))
    assert found[("edgebuf_cloud_requests_total", unmatched)] == 1


def test_each_app_has_its_own_registry(make_cloud_client, helpers, tmp_path):
    first = make_cloud_client()
    second = make_cloud_client(database_url=f"sqlite:///{tmp_path}/other.db")
    first.post("/log", json=helpers.batch("cam-1", helpers.seq_records(1, 2)))
    assert samples(first)[("edgebuf_cloud_records_accepted_total", ())] == 2
    assert samples(second)[("edgebuf_cloud_records_accepted_total", ())] == 0


def test_openapi_documents_the_log_contract(make_cloud_client):
    doc = make_cloud_client(max_batch_records=1234).get("/openapi.json").json()
    log = doc["paths"]["/log"]["post"]
    schema_ref = log["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref == "#/components/schemas/LogBatch"
    schemas = doc["components"]["schemas"]
    batch = schemas["LogBatch"]
    assert set(batch["required"]) == {"device_id", "batch_id", "records"}
    assert batch["properties"]["records"]["maxItems"] == 1234
    record = schemas["PredictionRecord"]
    assert set(record["required"]) == {"record_id", "seq", "timestamp", "prediction"}
    ok = log["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok == "#/components/schemas/LogResponse"
    assert {"400", "401", "403", "413", "415", "422", "503"} <= set(log["responses"])
    for path in (
        "/stats",
        "/predictions",
        "/devices/{device_id}/gaps",
        "/health",
        "/ready",
        "/metrics",
    ):
        assert path in doc["paths"]


# --- the database failing ---------------------------------------------------------------


def test_pool_exhausted_is_503_and_health_stays_up(make_cloud_client, helpers):
    api = make_cloud_client(
        db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2, retry_after_seconds=7
    )
    body = helpers.batch("cam-1", helpers.seq_records(1, 4))
    held = api.app.state.cloud.db.engine.connect()
    try:
        answer = api.post("/log", json=body)
        assert_503(answer, "pool exhausted")
        assert answer.headers["Retry-After"] == "7"
        assert_503(api.get("/ready"))
        assert_503(api.get("/stats"))
        assert api.get("/health").status_code == 200
    finally:
        held.close()
    assert api.post("/log", json=body).json()["accepted"] == 4
    found = samples(api)
    assert (
        found[("edgebuf_cloud_db_unavailable_total", (("reason", "connection pool exhausted"),))]
        == 3
    )


def _hold_write_lock(database_url: str):
    """Open a transaction in another connection that blocks writers; return it."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn
    conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(False))
    conn.execute("LOCK TABLE predictions IN EXCLUSIVE MODE")  # blocks INSERT, not SELECT
    return conn


@pytest.mark.timeout(30)  # a lock wait that ignores the timeout would hang here
def test_locked_database_is_503_and_nothing_half_written(make_cloud_client, helpers, database_url):
    api = make_cloud_client(sqlite_busy_timeout_ms=150, db_lock_timeout_ms=150)
    body = helpers.batch("cam-1", helpers.seq_records(1, 8))
    blocker = _hold_write_lock(database_url)
    try:
        answer = api.post("/log", json=body)
        assert_503(answer)
        assert any(word in answer.json()["detail"] for word in ("locked", "lock wait"))
        assert api.get("/ready").status_code == 200  # reads still work
    finally:
        blocker.rollback()
        blocker.close()
    stats = api.get("/stats").json()
    assert stats["total_records"] == 0 and stats["detections_per_class"] == {}
    retry = api.post("/log", json=body).json()
    assert (retry["accepted"], retry["duplicates"]) == (8, 0)


@pytest.mark.postgres
def test_database_gone_is_503(pg_database_factory, pg_admin, helpers):
    from fastapi.testclient import TestClient

    from cloud.app import create_app
    from cloud.settings import CloudSettings

    url = pg_database_factory()
    settings = CloudSettings(database_url=url, db_connect_timeout=2)
    with TestClient(create_app(settings)) as api:
        assert api.post("/log", json=helpers.batch("c", [helpers.record()])).status_code == 200
        with psycopg.connect(pg_admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)')
        assert_503(api.post("/log", json=helpers.batch("c", [helpers.record()])))
        assert_503(api.get("/ready"), "unreachable")
        assert_503(api.get("/predictions"))
        assert api.get("/health").status_code == 200
