"""The cloud acknowledges only what is durable, by default, on both backends."""

from __future__ import annotations

import os
import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url

from cloud.db import Database
from cloud.settings import CloudSettings

PG_ADMIN_URL = os.environ.get("EDGEBUF_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def test_sqlite_commits_are_durable_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("EDGEBUF_SQLITE_SYNCHRONOUS", raising=False)
    monkeypatch.delenv("EDGEBUF_DURABLE_ACK", raising=False)
    url = f"sqlite:///{tmp_path}/c.db"
    for settings, expected in [
        (CloudSettings(database_url=url), 2),  # FULL
        (CloudSettings(database_url=url, durable_ack=False), 1),  # NORMAL: the opt-out
        (CloudSettings(database_url=url, durable_ack=False, sqlite_synchronous="OFF"), 0),
        (CloudSettings(database_url=url, sqlite_synchronous="EXTRA"), 3),
    ]:
        db = Database(settings)
        try:
            with db.engine.connect() as conn:
                assert conn.execute(text("PRAGMA synchronous")).scalar() == expected
        finally:
            db.dispose()


def test_a_non_durable_sqlite_mode_needs_the_explicit_opt_out(monkeypatch) -> None:
    monkeypatch.setenv("EDGEBUF_SQLITE_SYNCHRONOUS", "NORMAL")
    with pytest.raises(ValidationError, match="EDGEBUF_DURABLE_ACK=false"):
        CloudSettings()
    monkeypatch.setenv("EDGEBUF_DURABLE_ACK", "false")
    assert CloudSettings().sqlite_sync_mode == "NORMAL"


@pytest.fixture
def pg_url_with_async_commit():
    """A fresh PostgreSQL database whose default is synchronous_commit=off."""
    psycopg = pytest.importorskip("psycopg")
    admin = make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(False)
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable under CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"edgebuf_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        try:
            yield (
                make_url(PG_ADMIN_URL)
                .set(drivername="postgresql+psycopg", database=name)
                .render_as_string(False)
            )
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_postgres_ingest_never_runs_with_synchronous_commit_off(pg_url_with_async_commit) -> None:
    for durable, expected in [(True, "on"), (False, "off")]:
        db = Database(CloudSettings(database_url=pg_url_with_async_commit, durable_ack=durable))
        try:
            for _ in range(3):  # every pooled connection, inside a write transaction too
                with db.engine.begin() as conn:
                    value = conn.execute(text("SHOW synchronous_commit")).scalar()
                    assert value == expected
        finally:
            db.dispose()
