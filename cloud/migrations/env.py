"""Alembic environment for the cloud store.

Normally run by `cloud.migrate`, which passes an open connection in
`config.attributes["connection"]` (so the upgrade happens under the caller's lock and on
the caller's engine, with its SQLite pragmas). Without one it falls back to
`sqlalchemy.url`, so the stock `alembic` CLI still works for writing new revisions:
`alembic -c cloud/alembic.ini revision -m "..."`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloud.schema import metadata

config = context.config


def run_offline() -> None:
    """Emit SQL to stdout instead of executing it (`alembic upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on the shared connection, or on a short-lived engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        # cloud.migrate wraps the run in one transaction on both backends (it emits BEGIN
        # itself on SQLite), so DDL is transactional even where Alembic assumes it is not.
        context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no sqlalchemy.url: run migrations through cloud.migrate")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
