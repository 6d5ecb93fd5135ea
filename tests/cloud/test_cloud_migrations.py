"""Schema migrations: packaged, applied once under concurrency, checked with --no-migrate."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import text

from cloud import migrate
from cloud.__main__ import main
from cloud.app import create_app
from cloud.db import create_db_engine
from cloud.schema import PARTITION_PREFIX, metadata_for
from cloud.settings import CloudSettings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request, tmp_path) -> str:
    """An empty database (never migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fresh.db"
    return request.getfixturevalue("pg_database_factory")()


@pytest.fixture
def engine_for():
    made = []

    def make(url: str):
        engine = create_db_engine(CloudSettings(database_url=url))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def _not_a_partition(obj, name, type_, reflected, compare_to) -> bool:
    """The day and default partitions are the parent table's storage, not extra tables."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = getattr(table, "name", "") or ""
    return not (table_name.startswith(PARTITION_PREFIX) or table_name == "predictions_default")


def test_migrated_schema_matches_the_metadata(fresh_url, engine_for):
    engine = engine_for(fresh_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": _not_a_partition})
        diff = compare_metadata(context, metadata_for(engine.dialect.name))
    assert diff == []


def test_concurrent_upgrades_apply_the_migration_once(fresh_url, engine_for):
    engines = [engine_for(fresh_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def run(engine) -> None:
        try:
            barrier.wait()
            migrate.upgrade(engine)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with engines[0].connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    assert versions == [(migrate.head_revision(),)]


def test_no_migrate_refuses_an_empty_database(fresh_url):
    result = CliRunner().invoke(main, ["--database-url", fresh_url, "--no-migrate"])
    assert result.exit_code == 1
    assert f"needs {migrate.head_revision()}" in result.output

    from fastapi.testclient import TestClient

    app = create_app(CloudSettings(database_url=fresh_url, migrate=False))
    with pytest.raises(migrate.MigrationError), TestClient(app):
        pass


def test_migrate_only_then_no_migrate_starts(fresh_url, helpers):
    result = CliRunner().invoke(main, ["--database-url", fresh_url, "--migrate-only"])
    assert result.exit_code == 0, result.output
    assert "current" in result.output

    from fastapi.testclient import TestClient

    app = create_app(CloudSettings(database_url=fresh_url, migrate=False))
    with TestClient(app) as api:
        assert api.post("/log", json=helpers.batch("c", [helpers.record()])).status_code == 200


def test_database_ahead_of_the_code_is_refused(fresh_url, engine_for):
    engine = engine_for(fresh_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(migrate.MigrationError):
        migrate.check_current(engine)
    with pytest.raises(migrate.MigrationError, match="newer than this code"):
        migrate.upgrade(engine)
    result = CliRunner().invoke(main, ["--database-url", fresh_url])
    assert result.exit_code == 1
    assert "9999_future" in result.output


def test_downgrade_then_upgrade_round_trips(tmp_path, engine_for):
    engine = engine_for(f"sqlite:///{tmp_path}/round.db")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        cfg = migrate.alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_unreachable_database_fails_start_with_one_clear_line():
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none"
    result = CliRunner().invoke(main, ["--database-url", url])
    assert result.exit_code == 1
    assert "is not usable" in result.output
