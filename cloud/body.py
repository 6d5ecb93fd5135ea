"""Read and decode a `POST /log` body under hard size limits.

The body is read by hand rather than by FastAPI so that the limits hold before any work
is done: the declared Content-Length is checked first, the stream is cut off past
`max_body_bytes`, and gzip or zstd is inflated incrementally with the same cap on the
output, so a small bomb cannot expand into gigabytes (zstd frames may also not ask for a
window over 8 MiB, which bounds the decoder's memory). Each failure is an `HTTPException` with
the status the edge acts on (413 split, 415/400 dead-letter).
"""

from __future__ import annotations

import io
import zlib

import zstandard
from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

__all__ = ["check_headers", "decode", "read_capped"]

_JSON_TYPES = ("application/json",)
_CHUNK = 64 * 1024
_ZSTD_MAX_WINDOW = 8 * 1024 * 1024  # the edge compresses at level 1 (a 512 KiB window)


def check_headers(request: Request, max_bytes: int) -> str:
    """Validate Content-Type, Content-Encoding and Content-Length; return the encoding.

    Returns "identity", "gzip" or "zstd".
    """
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _JSON_TYPES and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(
            415, f"Content-Type must be application/json, got {media_type or 'none'!r}"
        )
    encoding = request.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding == "x-gzip":
        encoding = "gzip"
    if encoding not in ("identity", "gzip", "zstd"):
        raise HTTPException(
            415, f"unsupported Content-Encoding {encoding!r}; use zstd, gzip or none"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise HTTPException(400, "Content-Length is not an integer") from None
        if length > max_bytes:
            raise HTTPException(413, f"body of {length} bytes exceeds the limit of {max_bytes}")
    return encoding


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """Read the raw body, failing with 413 as soon as it grows past `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPException(413, f"body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The edge gave up mid-upload (timeout, network): nothing was stored, it will
        # retry. Answering (to nobody) beats logging a 500 traceback for a normal event.
        raise HTTPException(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    """Inflate (possibly multi-member) gzip, never producing more than `max_bytes`."""
    out: list[bytes] = []
    produced = 0
    pending = data
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header and trailer
        chunk_in = pending
        while True:
            piece = inflater.decompress(chunk_in, max_bytes - produced + 1)
            produced += len(piece)
            if produced > max_bytes:
                raise HTTPException(
                    413, f"decompressed body exceeds the limit of {max_bytes} bytes"
                )
            out.append(piece)
            chunk_in = inflater.unconsumed_tail
            if not chunk_in or inflater.eof:
                break
        if not inflater.eof:
            raise HTTPException(400, "gzip body is truncated")
        pending = inflater.unused_data
        if pending.strip(b"\x00") == b"":  # trailing padding some writers add
            break
    return b"".join(out)


def _unzstd(data: bytes, max_bytes: int) -> bytes:
    """Decompress (possibly multi-frame) zstd, never producing more than `max_bytes`.

    A stream reader bounds the output; zstandard reports a truncated frame only through
    a decompression object's `eof`, so each frame is then checked complete that way (the
    same input, so no more output than was just counted)."""
    dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    reader = dctx.stream_reader(io.BytesIO(data), read_across_frames=True)
    out: list[bytes] = []
    produced = 0
    while piece := reader.read(_CHUNK):
        produced += len(piece)
        if produced > max_bytes:
            raise HTTPException(413, f"decompressed body exceeds the limit of {max_bytes} bytes")
        out.append(piece)
    pending = data
    while pending:
        frame = dctx.decompressobj()
        frame.decompress(pending)
        if not frame.eof:
            raise HTTPException(400, "zstd body is truncated")
        pending = frame.unused_data
    return b"".join(out)


def decode(raw: bytes, encoding: str, max_bytes: int) -> bytes:
    """Return the JSON bytes of a body read with `read_capped`."""
    if encoding not in ("gzip", "zstd"):
        return raw
    if not raw:
        raise HTTPException(400, f"{encoding} body is empty")
    try:
        return _gunzip(raw, max_bytes) if encoding == "gzip" else _unzstd(raw, max_bytes)
    except (zlib.error, zstandard.ZstdError) as error:
        raise HTTPException(400, f"body is not valid {encoding}: {error}") from None
