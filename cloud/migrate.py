"""Apply or check the schema migrations shipped inside the package.

Alembic is configured in code (`script_location` is this package's `migrations/` folder),
so the service never depends on the working directory or an alembic.ini.

Replicas that start together must not both run the same DDL. On PostgreSQL the upgrade
runs under a session-level `pg_advisory_lock`: the first replica migrates, the others wait
on the lock and then find the database at head (a no-op). On SQLite an exclusive `flock`
on a side file `<db>.migrate.lock` plays the same role between processes on one host.
The upgrade itself runs in one transaction on both backends (PostgreSQL and SQLite both
have transactional DDL), so a crash mid-migration leaves the previous revision intact.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

from cloud.db import sqlite_path

__all__ = [
    "MigrationError",
    "alembic_config",
    "check_current",
    "current_revision",
    "head_revision",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number works; derived from a name so it is greppable and stable.
ADVISORY_LOCK_KEY = zlib.crc32(b"edgebuf-cloud:migrations")
MIGRATION_LOCK_TIMEOUT_S = 300


class MigrationError(RuntimeError):
    """The database schema is not at the revision this code needs."""


def alembic_config() -> Config:
    """Return an Alembic config pointing at the packaged migrations (no ini file)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """Return the newest revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock, single-process use only
        yield
        return
    lock_path = sqlite_path(engine.url).with_name(sqlite_path(engine.url).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """Yield a connection that holds the cross-process migration lock."""
    if engine.dialect.name == "sqlite":
        with _sqlite_file_lock(engine), engine.connect() as conn:
            yield conn
        return
    with engine.connect() as conn:
        # The service's short lock_timeout is for requests; waiting for another replica's
        # migration (or for DDL locks behind live traffic) may legitimately take longer.
        conn.execute(text(f"SET lock_timeout = '{MIGRATION_LOCK_TIMEOUT_S}s'"))
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        conn.commit()  # the lock is session-level; end the implicit transaction
        try:
            yield conn
        finally:
            try:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                conn.execute(text("RESET lock_timeout"))  # back to the pool's short default
                conn.commit()
            except Exception:  # connection gone: the server released the lock with it
                log.warning("could not release the migration lock explicitly", exc_info=True)
                conn.invalidate()  # never hand this session back to the pool


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` under the migration lock, in one transaction."""
    cfg = alembic_config()
    with _migration_connection(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except CommandError as error:  # e.g. the database is at a revision we do not ship
            raise MigrationError(
                f"cannot migrate from revision {before or 'none'}: {error} (is the database "
                "newer than this code?)"
            ) from error
        after = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)


def check_current(engine: Engine) -> None:
    """Raise `MigrationError` unless the database is exactly at this code's head."""
    head = head_revision()
    current = current_revision(engine)
    if current != head:
        raise MigrationError(
            f"database schema is at revision {current or 'none (empty database)'} but this "
            f"code needs {head}; start without --no-migrate to apply migrations"
        )
