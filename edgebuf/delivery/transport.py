"""The transport seam: the only module that imports httpx.

The sender talks to a one-method-per-verb interface (``send`` a batch body, ``probe``
health) and gets plain ``SendResult`` values back; network exceptions are translated
here, so nothing above this module sees httpx types and tests can script a transport.
"""

from __future__ import annotations

import email.utils
import gzip
import time
from dataclasses import dataclass
from typing import Protocol

import httpx


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``POST /log`` attempt came to. ``status`` is None for network errors."""

    status: int | None
    retry_after: float | None = None
    error: str | None = None
    accepted: int | None = None
    duplicates: int | None = None


class Transport(Protocol):
    """What the sender and the connectivity monitor need from the network."""

    def send(self, body: bytes) -> SendResult:
        """POST one JSON batch body to the cloud's ``/log``."""

    def probe(self) -> bool:
        """``HEAD /health``: True when the cloud answers 2xx."""

    def close(self) -> None:
        """Release connections."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpTransport:
    """httpx-based transport with keep-alive, separate timeouts and optional gzip bodies."""

    GZIP_MIN_BYTES = 1024

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        request_timeout: float = 30.0,
        health_timeout: float = 5.0,
        use_gzip: bool = True,
    ) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "edgebuf"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=endpoint,
            headers=headers,
            timeout=httpx.Timeout(request_timeout, connect=min(request_timeout, 10.0)),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        )
        self._health_timeout = health_timeout
        self._gzip = use_gzip

    def send(self, body: bytes) -> SendResult:
        headers = {}
        if self._gzip and len(body) >= self.GZIP_MIN_BYTES:
            # Level 1: most of the size win for a fraction of the CPU on a small box.
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = self._client.post("/log", content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return SendResult(None, error=f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return SendResult(None, error=f"network error: {type(exc).__name__}: {exc}")
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if 200 <= resp.status_code < 300:
            accepted = duplicates = None
            try:
                data = resp.json()
                accepted, duplicates = data.get("accepted"), data.get("duplicates")
            except ValueError:
                pass
            return SendResult(resp.status_code, accepted=accepted, duplicates=duplicates)
        return SendResult(
            resp.status_code,
            retry_after=retry_after,
            error=f"HTTP {resp.status_code}: {resp.text[:300]}",
        )

    def probe(self) -> bool:
        try:
            resp = self._client.head("/health", timeout=self._health_timeout)
        except httpx.HTTPError:
            return False
        return 200 <= resp.status_code < 300

    def close(self) -> None:
        self._client.close()
