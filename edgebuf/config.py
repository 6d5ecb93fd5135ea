"""Edge settings: the one place where the environment is read.

Precedence: constructor keyword arguments, then environment variables, then the
design's defaults (batch 32 / 10 s, probe every 30 s with a 5 s timeout, 30 s
request timeout, 5 retries with 2^n s backoff, cleanup after 7 days, 1 GiB).
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgebuf.errors import ConfigError
from edgebuf.wire import DEVICE_ID_RE

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
    ca_bundle: Path | None = Field(
        None, description="PEM file of the CAs trusted for the cloud (EDGEBUF_CA_BUNDLE)."
    )
    client_cert: Path | None = Field(
        None, description="PEM certificate of this device, for mutual TLS (EDGEBUF_CLIENT_CERT)."
    )
    client_key: Path | None = Field(
        None, description="PEM private key of client_cert, unencrypted (EDGEBUF_CLIENT_KEY)."
    )
    batch_size: int = Field(32, ge=1, le=10_000)
    batch_timeout: float = Field(10.0, gt=0)
    backfill_batch_size: int = Field(512, ge=1, le=10_000)
    drain_concurrency: int = Field(
        32,
        ge=1,
        le=64,
        description="The most backlog requests in flight. With drain_adaptive (the default)"
        " the lane starts at 2 and adapts between 1 and this; without, exactly this many"
        " (drain_concurrency=2, drain_adaptive=false is the lane of earlier versions).",
    )
    drain_adaptive: bool = Field(
        True,
        description="Adapt the backlog requests in flight to the round trip (AIMD, like"
        " Vector's adaptive request concurrency): more while it stays flat, fewer on"
        " 429/503 or a rising round trip.",
    )
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
    compression: Literal["zstd", "gzip", "none"] | None = Field(
        None,
        description="Body compression (bodies of 1 KiB and more): zstd (level 1, the default:"
        " 18% fewer bytes than gzip at a third of its CPU), gzip (level 1) or none. A cloud"
        " that answers 415 to zstd gets gzip from then on.",
    )
    gzip: bool | None = Field(
        None,
        description="The older switch, used when compression is not given: false = none,"
        " true = gzip.",
    )
    reserve_bytes: int = Field(8 * 1024 * 1024, ge=0)
    auto_repair: bool = True
    verify_on_start: bool = True
    reconcile_interval: float = Field(300.0, ge=0)  # 0: no reconciliation (an older cloud)

    @property
    def wire_compression(self) -> str:
        """The compression in force: ``compression``, else what ``gzip`` says, else zstd."""
        if self.compression is not None:
            return self.compression
        if self.gzip is not None:
            return "gzip" if self.gzip else "none"
        return "zstd"

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
        if not DEVICE_ID_RE.fullmatch(value):
            raise ValueError(
                f"device_id must be 1-128 characters of letters, digits and ._:@- , got {value!r}"
            )
        return value


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal: a service would hang.
    raise _EncryptedKey


def ssl_context(s: EdgeSettings) -> ssl.SSLContext | None:
    """The TLS context of the TLS settings, loaded now so that a bad file fails at start.

    None when no TLS setting is given (httpx's defaults then apply). Raises ConfigError for
    a missing or unreadable file, a bundle with no certificate, a key that is encrypted or
    does not match the certificate, a key without a certificate, or TLS settings on an
    ``http://`` endpoint (they would be silently unused).
    """
    if s.ca_bundle is None and s.client_cert is None and s.client_key is None:
        return None
    if not s.endpoint.startswith("https://"):
        raise ConfigError(
            f"ca_bundle/client_cert/client_key need an https:// endpoint, got {s.endpoint!r}"
        )
    if s.client_key is not None and s.client_cert is None:
        raise ConfigError("client_key is set without client_cert")
    for name in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(s, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"{name}: no such file: {path}")
    try:
        if s.ca_bundle is not None:
            ctx = ssl.create_default_context(cafile=str(s.ca_bundle))
        else:
            import certifi  # httpx's own default trust store (httpx depends on certifi)

            ctx = ssl.create_default_context(cafile=certifi.where())
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ca_bundle {s.ca_bundle}: not a readable PEM of CAs ({exc})") from None
    if s.client_cert is not None:
        key = str(s.client_key) if s.client_key is not None else None
        try:
            ctx.load_cert_chain(str(s.client_cert), key, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigError(
                f"client_key {s.client_key or s.client_cert} is encrypted; give an unencrypted key"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"client_cert {s.client_cert} / client_key {s.client_key}: cannot load the"
                f" certificate and its key ({exc})"
            ) from None
    return ctx


def load_settings(**overrides: Any) -> EdgeSettings:
    """Build settings from keyword arguments (``None`` means "not given") and the environment.

    Raises ConfigError with every problem listed, so a bad deployment fails at start.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return EdgeSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{_name_and_env(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid edgebuf settings: {problems}") from None


def env_name(field: str) -> str:
    """The environment variable(s) a setting is read from, e.g. ``EDGEBUF_BATCH_SIZE``."""
    info = EdgeSettings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if names:
            return " or ".join(names)
    return f"EDGEBUF_{field.upper()}"


def _name_and_env(loc: tuple[int | str, ...]) -> str:
    field = ".".join(str(p) for p in loc) or "settings"
    if field in EdgeSettings.model_fields:
        return f"{field} (${env_name(field)})"
    return field
