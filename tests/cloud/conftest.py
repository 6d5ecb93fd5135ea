"""Fixtures for the cloud service tests: SQLite and PostgreSQL backed apps and databases.

PostgreSQL is the one at 127.0.0.1:5432 (trust auth, user postgres, database `test`;
override with EDGEBUF_TEST_PG_URL). Each session creates fresh `edgebuf_test_<hex>`
databases and drops them at the end. When PostgreSQL is unreachable its tests are
skipped, except under CI=true, where they fail: CI provides the server, so a skip there
would hide a broken setup.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from cloud.app import create_app
from cloud.settings import CloudSettings

PG_ADMIN_URL = os.environ.get("EDGEBUF_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_configure(config: pytest.Config) -> None:
    # Starlette's TestClient warns that its httpx support is deprecated (it wants httpx2);
    # the tests only use it as a client, so the notice is noise here.
    config.addinivalue_line(
        "filterwarnings", "ignore:Using `httpx` with `starlette.testclient` is deprecated"
    )


def _admin_conninfo() -> str:
    return make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin() -> str:
    """Conninfo of the administrative database; skip (or fail in CI) when unreachable."""
    try:
        with psycopg.connect(_admin_conninfo(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {error}".strip()
        if IN_CI:
            pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    return _admin_conninfo()


@pytest.fixture(scope="session")
def pg_database_factory(pg_admin: str) -> Iterator[Callable[[], str]]:
    """Return a function creating a fresh database; every one is dropped at session end."""
    created: list[str] = []

    def create() -> str:
        name = f"edgebuf_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return (
            make_url(PG_ADMIN_URL)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )

    yield create
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_shared_url(pg_database_factory: Callable[[], str]) -> str:
    """One database for the API tests (each test starts from empty tables)."""
    return pg_database_factory()


def _truncate(url: str) -> None:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.predictions')").fetchone()
        if exists and exists[0]:
            conn.execute(
                "TRUNCATE predictions, detection_counts, prediction_rollups,"
                " detection_rollups, device_seqs, seq_missing, seq_repeats,"
                " cloud_state RESTART IDENTITY"
            )


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A database URL with no stored records: a SQLite file, or the shared PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cloud.db"
    url: str = request.getfixturevalue("pg_shared_url")
    _truncate(url)
    return url


@pytest.fixture
def make_cloud_client(database_url: str) -> Iterator[Callable[..., Any]]:
    """Return `make(**settings)` building a started TestClient (lifespan ran)."""
    from fastapi.testclient import TestClient

    opened: list[Any] = []

    def make(**overrides: Any) -> Any:
        overrides.setdefault("database_url", database_url)
        client = TestClient(create_app(CloudSettings(**overrides)))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_cloud_client: Callable[..., Any]) -> Any:
    """An open (no keys) app on the parametrized backend."""
    return make_cloud_client()


def record(
    record_id: str | None = None,
    seq: int = 1,
    *,
    classes: tuple[str, ...] = ("part",),
    timestamp: float | str = 1_764_370_000.0,
    model_version: str | None = "yolov8n-factory-1",
    **extra: Any,
) -> dict[str, Any]:
    """One wire record with a detection per class name."""
    return {
        "record_id": record_id or uuid.uuid4().hex,
        "seq": seq,
        "image_id": f"frame-{seq:06d}",
        "timestamp": timestamp,
        "model_version": model_version,
        "prediction": {
            "detections": [
                {"class_name": name, "confidence": 0.9, "box": [1, 2, 3, 4]} for name in classes
            ]
        },
        **extra,
    }


def batch(
    device_id: str, records: list[dict[str, Any]], batch_id: str | None = None
) -> dict[str, Any]:
    """A `POST /log` body."""
    return {
        "device_id": device_id,
        "batch_id": batch_id or uuid.uuid4().hex[:16],
        "records": records,
    }


def seq_records(first: int, last: int, *, prefix: str = "r", **kwargs: Any) -> list[dict[str, Any]]:
    """Records with seqs first..last and deterministic ids `<prefix><seq>`."""
    return [record(f"{prefix}{seq}", seq, **kwargs) for seq in range(first, last + 1)]


@pytest.fixture
def helpers() -> Any:
    """The body builders above, for test modules (conftest is not importable by name)."""

    class Helpers:
        record = staticmethod(record)
        batch = staticmethod(batch)
        seq_records = staticmethod(seq_records)

        @staticmethod
        def dumps(body: Any) -> bytes:
            return json.dumps(body).encode()

    return Helpers
