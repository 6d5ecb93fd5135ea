"""Edge settings: the one place where the environment is read.

Precedence: constructor keyword arguments, then environment variables, then the
design's defaults (batch 32 / 10 s, probe every 30 s with a 5 s timeout, 30 s
request timeout, 5 retries with 2^n s backoff, cleanup after 7 days, 1 GiB).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgebuf.errors import ConfigError

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
GIB = 1024**3


def _default_device_id() -> str:
    host = re.sub(r"[^A-Za-z0-9._:@-]", "-", socket.gethostname())[:128]
    return host or "edge"


class EdgeSettings(BaseSettings):
    """Validated settings of one edge client. Environment names are listed per field."""

    model_config = SettingsConfigDict(env_prefix="EDGEBUF_", extra="forbid", populate_by_name=True)

    endpoint: str = Field(
        "http://127.0.0.1:8001",
        validation_alias=AliasChoices("endpoint", "CLOUD_LOGGING_ENDPOINT"),
        description="Base URL of the cloud logging service.",
    )
    db_path: Path = Field(
        Path("data/prediction_buffer.db"),
        validation_alias=AliasChoices("db_path", "BUFFER_DB_PATH"),
        description="SQLite buffer file.",
    )
    device_id: str = Field(
        default_factory=_default_device_id,
        validation_alias=AliasChoices("device_id", "DEVICE_ID"),
        description="Identity of this edge device; defaults to the host name.",
    )
    api_key: str | None = Field(None, description="Bearer token for the cloud (EDGEBUF_API_KEY).")
    batch_size: int = Field(32, ge=1, le=10_000)
    batch_timeout: float = Field(10.0, gt=0)
    backfill_batch_size: int = Field(512, ge=1, le=10_000)
    drain_concurrency: int = Field(2, ge=1, le=8)
    monitor_interval: float = Field(30.0, gt=0)
    health_timeout: float = Field(5.0, gt=0)
    request_timeout: float = Field(30.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_base: float = Field(2.0, gt=0)
    backoff_cap: float = Field(60.0, gt=0)
    cleanup_after_days: float = Field(7.0, ge=0)
    capacity_bytes: int = Field(GIB, ge=64 * 1024)
    durability: Literal["normal", "full"] = "normal"
    # normal: committed records are fsynced at most this long after their commit (the
    # power-loss window); full syncs every commit and ignores it.
    sync_interval: float = Field(1.0, gt=0)
    overflow_policy: Literal["evict", "reject"] = "evict"
    max_record_bytes: int = Field(1024 * 1024, ge=256)
    gzip: bool = True
    reserve_bytes: int = Field(8 * 1024 * 1024, ge=0)
    auto_repair: bool = True
    verify_on_start: bool = True

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint must be an http(s) URL with a host, got {value!r}")
        return value.rstrip("/")

    @field_validator("device_id")
    @classmethod
    def _check_device_id(cls, value: str) -> str:
        if not DEVICE_ID_RE.match(value):
            raise ValueError(
                f"device_id must be 1-128 characters of letters, digits and ._:@- , got {value!r}"
            )
        return value


def load_settings(**overrides: Any) -> EdgeSettings:
    """Build settings from keyword arguments (``None`` means "not given") and the environment.

    Raises ConfigError with every problem listed, so a bad deployment fails at start.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return EdgeSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid edgebuf settings: {problems}") from None
