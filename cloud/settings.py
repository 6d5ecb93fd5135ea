"""Configuration of the cloud logging service, read from the environment in one place.

`CloudSettings` is the only object that looks at environment variables. Everything else
(the app factory, the engine, the CLI) receives an instance, so tests can build many apps
with different settings in one process.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_URL", "CloudSettings", "normalize_database_url"]

DEFAULT_DATABASE_URL = "sqlite:///data/cloud_predictions.db"


def normalize_database_url(url: str) -> str:
    """Return `url` with a plain PostgreSQL scheme mapped onto the psycopg 3 driver.

    `postgres://` and `postgresql://` would make SQLAlchemy look for psycopg2, which is not
    a dependency; operators paste such URLs from their hosting provider all the time.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CloudSettings(BaseSettings):
    """Settings of one cloud service instance (environment, then keyword arguments).

    Keyword arguments win over the environment. Keys are secrets: they are never logged
    and `repr()` hides them.
    """

    model_config = SettingsConfigDict(
        env_prefix="EDGEBUF_", extra="ignore", populate_by_name=True, frozen=True
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        validation_alias=AliasChoices("DATABASE_URL", "EDGEBUF_DATABASE_URL", "database_url"),
        description="SQLAlchemy URL; sqlite:///path or postgresql+psycopg://user@host/db.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="Bearer tokens that may write and read for any device.",
    )
    device_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        repr=False,
        description="device_id -> bearer token; such a token may only act as its device.",
    )
    max_batch_records: int = Field(5000, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Pool per process: at most 20 connections, all kept once opened, so at most 20 of
    # anyio's 40 worker threads use the database at once (the others wait up to
    # db_pool_timeout, then get a 503), and four replicas stay under PostgreSQL's default
    # max_connections=100 with room for admin sessions. No overflow by default: SQLAlchemy
    # closes an overflow connection when it is returned, so 16 devices on a pool of 10
    # opened and closed a PostgreSQL backend for most requests (measured: ~13% of the
    # machine's CPU in backend start-up, bench/cloud_ingest.py).
    db_pool_size: int = Field(20, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    db_pool_timeout: float = Field(10.0, gt=0)
    db_pool_recycle: int = Field(1800, ge=-1)
    db_connect_timeout: int = Field(5, ge=1)
    # PostgreSQL: a pooled connection idle this long is pinged before use (see cloud.db).
    db_ping_after_idle: float = Field(5.0, ge=0)
    # Bounds how long one transaction may wait on a row or table lock on PostgreSQL before
    # the request turns into a retryable 503 instead of hanging past the edge's timeout.
    db_lock_timeout_ms: int = Field(10_000, ge=0)
    sqlite_busy_timeout_ms: int = Field(5_000, ge=0)
    # A 200 means "durable": SQLite commits with synchronous=FULL (the group commit pays one
    # fsync per batch), PostgreSQL never runs with synchronous_commit=off. False (the opt-out,
    # EDGEBUF_DURABLE_ACK=false) trades that for speed: NORMAL / the server's setting, and a
    # power cut of the cloud host may lose batches the edge was told were stored.
    durable_ack: bool = True
    # None: FULL when durable_ack, else NORMAL. OFF/NORMAL need durable_ack=false.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] | None = None
    # Pages of WAL before an automatic checkpoint (SQLite's default is 1000). Successive
    # commits dirty the same pages (the tails of the table and its indexes, the rollups);
    # checkpointing less often writes each such page back once instead of many times
    # (~20% faster ingest, measured when the key index was still random-ordered) at the
    # cost of a WAL file of up to ~40 MB.
    sqlite_wal_autocheckpoint: int = Field(10_000, ge=0)
    # Seconds between checkpoints by a background thread while writes arrive (0: none,
    # leave it all to wal_autocheckpoint inside the committing request). It takes the
    # copy-and-fsync out of the request path and bounds what a power cut can lose under
    # synchronous=NORMAL to about this long.
    sqlite_background_checkpoint: float = Field(0.5, ge=0)
    retry_after_seconds: int = Field(5, ge=0)
    migrate: bool = Field(True, description="Apply migrations at start-up (else only check).")
    # Retention and maintenance (cloud.maintenance). None keeps every record forever.
    retention_days: float | None = Field(
        None, gt=0, description="Keep records this many days (whole UTC days); None: all."
    )
    maintenance_interval: float = Field(
        600.0, ge=0, description="Seconds between maintenance rounds (0: only at start-up)."
    )
    partition_days_ahead: int = Field(3, ge=1, le=366)

    # Mutual TLS through a reverse proxy (deploy/nginx/edgebuf.conf): see cloud.auth.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of the reverse proxies whose"
        " X-Client-Verify / X-Client-Subject headers are believed; from any other peer they"
        " are ignored.",
    )
    cert_device_binding: bool = Field(
        False,
        description="A request whose client certificate a trusted proxy verified acts only"
        " for the device named by the certificate's CN (403 otherwise), like a device key.",
    )

    @model_validator(mode="after")
    def _check_durability(self) -> CloudSettings:
        if self.durable_ack and self.sqlite_synchronous in ("OFF", "NORMAL"):
            raise ValueError(
                f"sqlite_synchronous={self.sqlite_synchronous} acknowledges batches that a power"
                " cut of the cloud host can lose; set EDGEBUF_DURABLE_ACK=false to accept that"
            )
        return self

    @property
    def sqlite_sync_mode(self) -> str:
        """The PRAGMA synchronous the SQLite backend runs with."""
        if self.sqlite_synchronous is not None:
            return self.sqlite_synchronous
        return "FULL" if self.durable_ack else "NORMAL"

    @field_validator("database_url", mode="after")
    @classmethod
    def _normalize_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_trusted_proxies(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, (list, tuple)):
            for item in value:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(
                        f"trusted proxy must be an IP address or network, got {item!r}"
                    ) from None
        return value

    @model_validator(mode="after")
    def _binding_needs_proxies(self) -> CloudSettings:
        if self.cert_device_binding and not self.trusted_proxies:
            raise ValueError(
                "cert_device_binding needs trusted_proxies (the proxy that verifies certificates)"
            )
        return self

    @field_validator("device_keys", mode="before")
    @classmethod
    def _parse_device_keys(cls, value: object) -> object:
        # "device:key" pairs split at the LAST colon, because ':' is legal in a device_id.
        if isinstance(value, str):
            value = _split_csv(value)
        if isinstance(value, (list, tuple)):
            pairs: dict[str, str] = {}
            for item in value:
                device, sep, key = str(item).rpartition(":")
                if not sep or not device or not key:
                    raise ValueError(f"device key entry must be 'device_id:key', got {item!r}")
                pairs[device] = key
            return pairs
        return value
