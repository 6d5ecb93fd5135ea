"""Command line: `python -m cloud` / `edgebuf-cloud` runs the service under uvicorn.

The schema step (migrate, or with --no-migrate only check) runs here once, before any
worker starts, so a database that is unreachable or behind is reported as one clear line
and exit status 1 rather than a traceback per worker. The app's own lifespan then only
re-checks the revision.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import click
from pydantic import ValidationError

from cloud.settings import CloudSettings

__all__ = ["main"]

log = logging.getLogger("cloud")


def _app_from_env():  # type: ignore[no-untyped-def]
    """Uvicorn factory for --workers > 1 (each worker process builds its own app)."""
    from cloud.app import create_app

    app = create_app(CloudSettings())
    _freeze_gc()
    return app


def _freeze_gc() -> None:
    """Move everything allocated so far out of the cyclic garbage collector's sight.

    The modules, the app and its models live as long as the process, yet every full
    collection would traverse them again; a batch of records allocates enough containers
    to trigger one every few requests, which cost ~25% of the CPU of `POST /log`. Called
    once per server process, after the app is built (never on import: test processes
    build many apps and must be able to collect them).
    """
    gc.collect()
    gc.freeze()


def _schema_step(settings: CloudSettings, migrate_only: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from cloud import migrate
    from cloud.db import create_db_engine

    engine = create_db_engine(settings)
    try:
        if settings.migrate or migrate_only:
            migrate.upgrade(engine)
        else:
            migrate.check_current(engine)
    except migrate.MigrationError as error:
        raise click.ClickException(str(error)) from None
    except SQLAlchemyError as error:
        raise click.ClickException(
            f"database {engine.url.render_as_string(hide_password=True)} is not usable: "
            f"{getattr(error, 'orig', None) or error}"
        ) from None
    finally:
        engine.dispose()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL [env DATABASE_URL; default sqlite:///data/cloud_predictions.db].",
)
@click.option(
    "--no-migrate",
    is_flag=True,
    help="Do not apply migrations; refuse to start unless the schema is current.",
)
@click.option("--migrate-only", is_flag=True, help="Apply migrations, then exit.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option("--access-log/--no-access-log", default=True, show_default=True)
def main(
    host: str,
    port: int,
    database_url: str | None,
    no_migrate: bool,
    migrate_only: bool,
    workers: int,
    log_level: str,
    access_log: bool,
) -> None:
    """Run the edgebuf cloud logging service."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if log_level != "debug":  # Alembic narrates every context it opens at INFO
        logging.getLogger("alembic").setLevel(logging.WARNING)
    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if no_migrate:
        overrides["migrate"] = False
    try:
        settings = CloudSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise click.ClickException(f"invalid settings:\n{error}") from None

    _schema_step(settings, migrate_only)
    if migrate_only:
        click.echo("database schema is current")
        return

    # Workers (and the single in-process app) only check the revision from here on.
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        from cloud.app import create_app

        checked = settings.model_copy(update={"migrate": False})
        app = create_app(checked)
        _freeze_gc()
        uvicorn.run(app, **common)
        return
    os.environ["DATABASE_URL"] = settings.database_url
    os.environ["EDGEBUF_MIGRATE"] = "false"
    uvicorn.run("cloud.__main__:_app_from_env", factory=True, workers=workers, **common)


if __name__ == "__main__":
    main()
