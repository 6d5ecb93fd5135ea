"""The socket side of ``edgebuf.lab.faults.FaultProxy``: a small HTTP/1.1 reverse proxy on asyncio.

One request per connection: the server reads a request (request line, headers,
``Content-Length`` body), asks its owner which fault applies (``choose``), then either
forwards it upstream with ``Connection: close`` and relays the answer byte for byte, or
misbehaves. Every answer ends the connection, which httpx treats like any server that does
not keep connections alive; that makes each request a separate unit a fault can hit.

A ``LinkShaper`` (``edgebuf.lab.link``), when one is set, carries every request and
answer between the edge and the proxy, whatever the fault: the request crosses the link
before it is forwarded (or refused, or hung), the answer crosses it before it is written.
Every request's ``bytes_up`` / ``bytes_down`` (head and body as on the wire) are counted
with or without a link.

Two ways to be "down": closing the listening socket makes new connects fail with
ECONNREFUSED; a reset (close with ``SO_LINGER`` 0) makes an open connection fail with
ECONNRESET instead of a clean end of stream, as a dropped NAT entry or a rebooted box does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from edgebuf.lab.fault import Fault
    from edgebuf.lab.link import LinkShaper

MAX_HEAD = 64 * 1024  # request line and headers; more is answered 431
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "host"}
_REASONS = {
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    500: "Internal Server Error",
    411: "Length Required",
    431: "Request Header Fields Too Large",
}


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    size: int = 0  # bytes on the wire: request line, headers and body

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


async def read_request(reader: asyncio.StreamReader) -> Request | int | None:
    """One request; None at end of stream, an HTTP status for a request we cannot take."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        return 431
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        return None
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
    fields = {k.lower(): v for k, v in headers}
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return 411  # the edge client always sends Content-Length
    length = int(fields.get("content-length") or 0)
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        return None
    return Request(method.upper(), target, headers, body, len(head) + len(body))


def response(
    code: int, detail: str, retry_after: float | None = None, *, as_cloud: bool = False
) -> bytes:
    """A complete JSON error answer of our own making (``Connection: close``); with
    ``as_cloud``, in the cloud's own words: a refusal of the batch's records."""
    payload: dict[str, Any] = {"detail": detail}
    if as_cloud:
        payload.update(service="edgebuf-cloud", refused="record")
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n"
    )
    if retry_after is not None:
        head += f"retry-after: {retry_after:g}\r\n"
    return (head + "\r\n").encode("latin-1") + body


def parse_answer(raw: bytes) -> tuple[int | None, dict[str, Any]]:
    """Status code and, for a JSON body with Content-Length framing, the parsed body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b"\r\n", 1)[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None, {}
    if b"chunked" in head.lower() or not body:
        return status, {}
    try:
        data = json.loads(body)
    except ValueError:
        return status, {}
    return status, data if isinstance(data, dict) else {}


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with an RST (SO_LINGER 0), not a clean FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ProxyServer:
    """Accepts on ``host:port`` and serves each request as ``choose(method, path)`` says
    (it returns the fault to apply and the mode label to record).

    Runs inside one event loop (the owner's thread); ``report(entry)`` gets one dict per
    request: ``t`` (arrival), ``t_done``, method, path, ``mode``, ``outcome`` (forwarded,
    slowed, dropped_ack, injected, hung, reset, upstream_error, bad_request), ``status``
    and, for forwarded ``/log`` answers, the cloud's ``accepted`` / ``duplicates``; with
    ``bytes_up`` / ``t_up`` (the request has crossed the link) and ``bytes_down`` /
    ``t_answered`` (the answer has crossed it and is written) where they apply.
    """

    def __init__(
        self,
        upstream: str,
        choose: Callable[[str, str], tuple[Fault, str]],
        report: Callable[[dict], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.up_host, self.up_port = parts.hostname, parts.port or 80
        self.choose, self.report = choose, report
        self.host, self.port = host, port
        self.upstream_timeout = upstream_timeout
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, asyncio.Task] = {}
        self.shaper: LinkShaper | None = None  # the link between the edge and us, if shaped

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def listen(self) -> None:
        """Open the listening socket (again, on the same port after the first time)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True, backlog=128, limit=MAX_HEAD
            )
            self.port = self._server.sockets[0].getsockname()[1]

    def unlisten(self) -> None:
        """Close the listening socket (connects are refused) and reset open connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.reset_all()

    def reset_all(self) -> None:
        for writer in list(self._conns):
            reset(writer)

    async def shutdown(self) -> None:
        """Stop listening, reset every connection and wait (briefly) for the handlers."""
        self.unlisten()
        tasks = list(self._conns.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)

    async def _forward(self, req: Request) -> bytes:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.up_host, self.up_port), self.upstream_timeout
        )
        try:
            lines = [f"{req.method} {req.target} HTTP/1.1", f"Host: {self.up_host}:{self.up_port}"]
            lines += [f"{k}: {v}" for k, v in req.headers if k.lower() not in _HOP_BY_HOP]
            lines += ["Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1") + req.body)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), self.upstream_timeout)
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[writer] = task
        try:
            req = await read_request(reader)
            if req is None:
                return
            if isinstance(req, int):
                writer.write(response(req, "request not supported by the fault proxy"))
                await writer.drain()
                return
            await self._serve(req, reader, writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the peer went away, or we reset it: nothing to answer
        finally:
            self._conns.pop(writer, None)
            if not writer.is_closing():
                writer.close()

    async def _serve(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        fault, label = self.choose(req.method, req.path)
        entry: dict[str, Any] = {
            "t": time.time(),
            "method": req.method,
            "path": req.path,
            "mode": label,
            "status": None,
        }
        kind = fault.kind
        if kind == "down":
            self._done(entry, "reset")
            reset(writer)
            return
        shaper = self.shaper
        if shaper is not None:
            await shaper.send(req.size, upstream=True)
        entry["bytes_up"], entry["t_up"] = req.size, time.time()
        if kind == "hang":
            self._done(entry, "hung")
            await reader.read()  # until the client gives up (or we are closed)
            return
        if kind == "status":
            assert fault.code is not None
            self._done(entry, "injected", status=fault.code)
            detail = f"injected by FaultProxy: HTTP {fault.code}"
            answer = response(fault.code, detail, fault.retry_after, as_cloud=fault.as_cloud)
            await self._answer(writer, answer, entry)
            return
        try:
            raw = await self._forward(req)
            if not raw:
                raise ConnectionError("upstream closed without an answer")
        except (asyncio.TimeoutError, OSError) as exc:
            code = 504 if isinstance(exc, asyncio.TimeoutError) else 502
            self._done(entry, "upstream_error", status=code)
            await self._answer(
                writer, response(code, f"upstream unreachable or silent: {exc!r}"), entry
            )
            return
        status, data = parse_answer(raw)
        info = {k: data[k] for k in ("accepted", "duplicates") if isinstance(data.get(k), int)}
        if kind == "drop_ack":
            self._done(entry, "dropped_ack", status=status, **info)
            reset(writer)
            return
        if kind == "slow":
            await asyncio.sleep(fault.seconds)
        # Counted before the write: a client that gave up during a slow answer still made
        # the cloud commit, and that is what the counters are for.
        self._done(entry, "slowed" if kind == "slow" else "forwarded", status=status, **info)
        await self._answer(writer, raw, entry)

    async def _answer(self, writer: asyncio.StreamWriter, raw: bytes, entry: dict) -> None:
        """Carry an answer back over the link (if shaped) and write it."""
        shaper = self.shaper
        if shaper is not None:
            await shaper.send(len(raw), upstream=False)
        entry["bytes_down"], entry["t_answered"] = len(raw), time.time()  # before any byte
        writer.write(raw)
        await writer.drain()

    def _done(self, entry: dict, outcome: str, **info: Any) -> None:
        entry.update(info, outcome=outcome, t_done=time.time())
        self.report(entry)
