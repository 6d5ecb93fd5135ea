"""``HttpTransport``: the only module that imports httpx (imported on first use, so
``import edgebuf`` does not load httpx, nor the click and rich that httpx's CLI pulls in).

Network exceptions are translated here into plain ``SendResult`` values, so nothing above
this module sees httpx types.
"""

from __future__ import annotations

import gzip
from typing import Any

import httpx

from edgebuf.delivery.transport import SendResult, parse_retry_after


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

    def watermark(self, device_id: str, *, from_seq: int, limit: int) -> dict[str, Any] | None:
        """``GET /devices/{id}/watermark``: what the cloud holds for the device (for
        reconciliation), or None when it cannot say now (unreachable, error, old cloud)."""
        try:
            resp = self._client.get(
                f"/devices/{device_id}/watermark", params={"from_seq": from_seq, "limit": limit}
            )
        except httpx.HTTPError:
            return None
        if resp.status_code != 200:
            return None
        try:
            answer = resp.json()
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def close(self) -> None:
        self._client.close()
