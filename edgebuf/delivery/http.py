"""``HttpTransport``: the only module that imports httpx (imported on first use, so
``import edgebuf`` does not load httpx, nor the click and rich that httpx's CLI pulls in).

Network exceptions are translated here into plain ``SendResult`` values, so nothing above
this module sees httpx types. Bodies of 1 KiB and more are compressed: ``zstd`` (level 1) by
default, ``gzip`` (level 1) or ``none``; a 415 to a compressed body (a cloud older than its
edge) makes the transport send the same body again with gzip at once and keep gzip from
then on (logged once), so an old cloud costs one extra request, never a dead-lettered
batch. This is also where an answer is told apart from the cloud's:
a 2xx counts as an acknowledgement only when it carries the cloud's ``{"batch_id",
"accepted", "duplicates"}``, and an error only sets ``refused`` when its JSON body is the
cloud's own (``"service": "edgebuf-cloud"``). Anything else (nginx's 400 page for a missing
or bad client certificate, a WAF's 403, a captive portal's 200) is a proxy fault, and a
failed TLS handshake is a TLS fault: both keep the records pending.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import ssl
import threading
from collections.abc import Callable
from typing import Any

import httpx

from edgebuf.delivery.state import CLOUD, NETWORK, NOT_ACK, PROXY, TLS, FaultLog
from edgebuf.delivery.transport import SendResult, parse_retry_after

log = logging.getLogger("edgebuf.delivery.http")

COMPRESSIONS = ("zstd", "gzip", "none")
CLOUD_SERVICE = "edgebuf-cloud"  # the "service" field of the cloud's error bodies
_TITLE = re.compile(rb"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)


def tls_reason(exc: BaseException) -> str | None:
    """A stable, readable reason when ``exc`` comes from a TLS failure, else None."""
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"TLS: the cloud's certificate is not trusted: {err.verify_message}"
        if isinstance(err, ssl.SSLError):
            return f"TLS: handshake failed: {err.reason or err}"
        err = err.__cause__ or err.__context__
    return None


def _json(resp: httpx.Response) -> Any:
    try:
        return json.loads(resp.content)
    except ValueError:
        return None


def _ack(resp: httpx.Response) -> tuple[str, int, int] | None:
    data = _json(resp)
    if not isinstance(data, dict):
        return None
    batch_id, accepted, duplicates = (data.get(k) for k in ("batch_id", "accepted", "duplicates"))
    if (
        isinstance(batch_id, str)
        and type(accepted) is int  # noqa: E721 - bool is not a count
        and type(duplicates) is int  # noqa: E721
        and accepted >= 0
        and duplicates >= 0
    ):
        return batch_id, accepted, duplicates
    return None


def proxy_reason(resp: httpx.Response) -> tuple[str, str]:
    """(fault kind, reason) of an answer that is not the cloud's: the page's title when it
    has one; nginx's client-certificate pages (its 495/496, sent as 400) count as TLS."""
    title = _TITLE.search(resp.content[:4096])
    if title:
        text = title.group(1).decode("utf-8", "replace")
    else:
        text = " ".join(resp.content[:200].decode("utf-8", "replace").split()) or "no body"
    kind = TLS if "ssl certificate" in text.lower() else PROXY
    return kind, f"HTTP {resp.status_code} not from the cloud: {text}"


def error_result(resp: httpx.Response) -> SendResult:
    """The ``SendResult`` of a non-2xx answer: ``refused`` from the cloud's own error body,
    else a proxy (or TLS) fault with the reason read from the page."""
    status = resp.status_code
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    data = _json(resp)
    if isinstance(data, dict) and data.get("service") == CLOUD_SERVICE:
        detail = json.dumps(data.get("detail"))[:300]
        return SendResult(
            status,
            retry_after=retry_after,
            error=f"HTTP {status} from the cloud: {detail}",
            refused=str(data.get("refused") or "request"),
        )
    kind, reason = proxy_reason(resp)
    return SendResult(status, retry_after=retry_after, error=reason, fault=kind)


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
    """httpx-based transport with keep-alive, separate timeouts and compressed bodies.

    ``tls``: the SSLContext of ``EdgeSettings``' CA bundle and client certificate (see
    ``edgebuf.config.ssl_context``), else httpx's default verification. ``faults``: where
    a failed probe is reported (sends are reported by the sender).
    """

    GZIP_MIN_BYTES = 1024

    def __init__(
        self,
        endpoint: str,
        *,
        api_key: str | None = None,
        request_timeout: float = 30.0,
        health_timeout: float = 5.0,
        use_gzip: bool = True,
        tls: ssl.SSLContext | None = None,
        faults: FaultLog | None = None,
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
            limits=httpx.Limits(
                max_connections=max(4, max_connections),
                max_keepalive_connections=max(2, max_connections),
            ),
            verify=tls if tls is not None else True,
        )
        self._health_timeout = health_timeout
        self.compression = compression or ("gzip" if use_gzip else "none")
        self._compress = compressor(self.compression)
        self._faults = faults

    def _post(self, body: bytes) -> httpx.Response:
        encoding = self.compression
        if self._compress is None or len(body) < self.GZIP_MIN_BYTES:
            return self._client.post("/log", content=body)
        resp = self._client.post(
            "/log", content=self._compress(body), headers={"Content-Encoding": encoding}
        )
        if resp.status_code == 415 and encoding != "gzip":
            # A cloud older than this edge: it takes gzip. Switch for good, send again.
            log.warning(
                "cloud refused Content-Encoding %s (HTTP 415); using gzip from now on", encoding
            )
            self.compression, self._compress = "gzip", compressor("gzip")
            return self._post(body)
        return resp

    def send(self, body: bytes) -> SendResult:
        try:
            resp = self._post(body)
        except httpx.TimeoutException as exc:
            return SendResult(None, error=f"timeout: {type(exc).__name__}", fault=NETWORK)
        except httpx.HTTPError as exc:
            tls = tls_reason(exc)
            if tls is not None:
                return SendResult(None, error=tls, fault=TLS)
            return SendResult(
                None, error=f"network error: {type(exc).__name__}: {exc}", fault=NETWORK
            )
        status = resp.status_code
        if 200 <= status < 300:
            ack = _ack(resp)
            if ack is None:
                _, reason = proxy_reason(resp)
                return SendResult(
                    status,
                    error=f"{reason} (a {status} that is not the cloud's acknowledgement)",
                    fault=NOT_ACK,
                )
            return SendResult(status, batch_id=ack[0], accepted=ack[1], duplicates=ack[2])
        return error_result(resp)

    def probe(self) -> bool:
        """``GET /health``: True on a 2xx. A GET rather than HEAD, so a proxy's refusal page
        (nginx's "No required SSL certificate was sent") can be read for the fault reason."""
        try:
            resp = self._client.get("/health", timeout=self._health_timeout)
        except httpx.HTTPError as exc:
            tls = tls_reason(exc)
            if tls is not None:
                self._probe_failed(TLS, tls)
            else:
                self._probe_failed(NETWORK, f"network error: {type(exc).__name__}: {exc}")
            return False
        if 200 <= resp.status_code < 300:
            return True
        result = error_result(resp)
        self._probe_failed(result.fault or CLOUD, result.error or f"HTTP {resp.status_code}")
        return False

    def _probe_failed(self, kind: str, reason: str) -> None:
        # Counted when it is the fault in force (or there is none); a different fault a
        # send reported is kept, since a send's answer says more than a probe's.
        if self._faults is None:
            return
        current = self._faults.current
        if current is None or (current.kind, current.reason) == (kind, reason):
            self._faults.report(kind, reason)

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
