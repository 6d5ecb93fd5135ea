"""``HttpTransport``: the only module that imports httpx (imported on first use, so
``import edgebuf`` does not load httpx, nor the click and rich that httpx's CLI pulls in).

Network exceptions are translated here into plain ``SendResult`` values, so nothing above
this module sees httpx types.

Bodies of 1 KiB and more are compressed: ``zstd`` (level 1) by default, ``gzip`` (level 1)
or ``none``. An edge upgraded before its cloud would send zstd to a cloud that answers
415 to it; a 415 to a compressed body makes the transport send the same body again with
gzip at once and keep gzip from then on (logged once), so an old cloud costs one extra
request, never a dead-lettered batch.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Callable

import httpx

from edgebuf.delivery.transport import SendResult, parse_retry_after

log = logging.getLogger("edgebuf.delivery.http")

COMPRESSIONS = ("zstd", "gzip", "none")


def compressor(name: str) -> Callable[[bytes], bytes] | None:
    """The body compressor for a ``compression`` setting (None for ``none``)."""
    if name == "gzip":
        # Level 1: most of the size win for a fraction of the CPU on a small box.
        return lambda body: gzip.compress(body, compresslevel=1)
    if name == "zstd":
        import zstandard  # loaded when first chosen

        # A ZstdCompressor is not thread-safe (sharing one between the backlog lane's
        # workers crashes the process): one per thread.
        local = threading.local()

        def compress(body: bytes) -> bytes:
            ctx = getattr(local, "ctx", None)
            if ctx is None:
                ctx = local.ctx = zstandard.ZstdCompressor(level=1)
            return ctx.compress(body)

        return compress
    if name == "none":
        return None
    raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {name!r}")


class HttpTransport:
    """httpx-based transport with keep-alive, separate timeouts and compressed bodies."""

    GZIP_MIN_BYTES = 1024  # bodies under this are sent as they are, whatever the compression

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        request_timeout: float = 30.0,
        health_timeout: float = 5.0,
        use_gzip: bool = True,
        max_connections: int = 4,
        compression: str | None = None,
    ) -> None:
        """``compression`` is zstd, gzip or none; not given, ``use_gzip`` (the older
        switch) picks gzip or none."""
        headers = {"Content-Type": "application/json", "User-Agent": "edgebuf"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=endpoint,
            headers=headers,
            timeout=httpx.Timeout(request_timeout, connect=min(request_timeout, 10.0)),
            # the backlog lane's requests in flight, the live lane's and the health probe's
            limits=httpx.Limits(max_connections=max(4, max_connections),
                                max_keepalive_connections=max(2, max_connections)),
        )
        self._health_timeout = health_timeout
        self.compression = compression or ("gzip" if use_gzip else "none")
        self._compress = compressor(self.compression)

    def _post(self, body: bytes) -> httpx.Response:
        encoding = self.compression
        if self._compress is None or len(body) < self.GZIP_MIN_BYTES:
            return self._client.post("/log", content=body)
        resp = self._client.post("/log", content=self._compress(body),
                                 headers={"Content-Encoding": encoding})
        if resp.status_code == 415 and encoding != "gzip":
            # A cloud older than this edge: it takes gzip. Switch for good, send again.
            log.warning("cloud refused Content-Encoding %s (HTTP 415); using gzip from now on",
                        encoding)
            self.compression, self._compress = "gzip", compressor("gzip")
            return self._post(body)
        return resp

    def send(self, body: bytes) -> SendResult:
        try:
            resp = self._post(body)
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
