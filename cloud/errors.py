"""How failures become HTTP answers, so the edge can tell "retry" from "give up".

The edge retries 408/429/5xx and network errors, splits a batch on 413, and dead-letters
records only when this service's own error body says it refused them. So every database
problem that may go away (unreachable, locked, pool exhausted, lock timeout, deadlock, a
migration rolled back under us) must be a 503 with a `Retry-After`, and must leave nothing
half-written: each batch is one transaction, and an error inside it rolls the whole
transaction back before the 503 is sent.

Every error body names this service (`"service": "edgebuf-cloud"`) and what was refused
(`"refused"`: `record` for a `/log` body whose records are invalid, with `records`, the
indices at fault when known; `batch` for a size limit; `auth`; `request` for anything
else; `unavailable`), so the edge can tell the cloud's refusal of a record from a proxy's
400 page (nginx answers a missing client certificate with one) and never dead-letters on
the latter.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "SERVICE",
    "ServiceUnavailable",
    "error_body",
    "install_error_handlers",
    "translate_db_errors",
]

SERVICE = "edgebuf-cloud"  # the edge recognises this service's error bodies by this name

log = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The database cannot serve this request now; the client should retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _classify(error: BaseException) -> str:
    """Name the kind of outage in a few words (no SQL, no parameters, no secrets)."""
    if isinstance(error, sa_exc.TimeoutError):
        return "connection pool exhausted"
    text = str(getattr(error, "orig", error)).lower()
    if "locked" in text or "busy" in text:
        return "database is locked"
    if "lock timeout" in text or "canceling statement" in text:
        return "lock wait timed out"
    if "deadlock" in text:
        return "deadlock detected"
    if isinstance(error, sa_exc.ProgrammingError) or "no such table" in text:
        return "database schema is not ready"
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)) or getattr(
        error, "connection_invalidated", False
    ):
        return "database unreachable"
    return "database error"


@contextlib.contextmanager
def translate_db_errors() -> Iterator[None]:
    """Turn SQLAlchemy errors raised inside into `ServiceUnavailable` (or 422 for bad data).

    DataError means the database refused a value; retrying the same batch can never
    succeed, so it is a client error rather than an endless 503 loop.
    """
    try:
        yield
    except sa_exc.DataError as error:
        log.warning("database rejected a value", exc_info=True)
        raise HTTPException(422, f"a value was rejected by the database: {error.orig}") from error
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
        reason = _classify(error)
        log.warning("database unavailable (%s)", reason, exc_info=True)
        raise ServiceUnavailable(reason) from error


def unavailable_response(reason: str, retry_after: int) -> JSONResponse:
    """Build the 503 body and headers used for every retryable server-side failure."""
    return JSONResponse(
        {
            "detail": f"service unavailable: {reason}; retry later",
            "service": SERVICE,
            "refused": "unavailable",
        },
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def _refused(path: str, status: int, detail: object) -> str:
    """What an error refuses (see the module docstring)."""
    if status in (401, 403):
        return "auth"
    if status == 413:
        return "batch"
    if path == "/log" and (
        status == 422 or (status == 400 and str(detail).startswith("body is not valid JSON"))
    ):
        return "record"  # schema, JSON syntax, a value the database refused: the records
    return "request"


def _records_at_fault(detail: object) -> list[int]:
    """Indices of the records a validation `detail` names (`loc` body.records.<i>...)."""
    if not isinstance(detail, list):
        return []
    found = set()
    for item in detail:
        loc = item.get("loc") if isinstance(item, dict) else None
        if isinstance(loc, (list, tuple)) and len(loc) > 2 and list(loc[:2]) == ["body", "records"]:
            if isinstance(loc[2], int):
                found.add(loc[2])
    return sorted(found)


def error_body(path: str, status: int, detail: object) -> dict[str, Any]:
    """The JSON body of a 4xx answer: FastAPI's `detail`, plus this service's name and
    what was refused, so the edge can recognise it."""
    body: dict[str, Any] = {"detail": detail, "service": SERVICE}
    body["refused"] = refused = _refused(path, status, detail)
    if refused == "record":
        body["records"] = _records_at_fault(detail)
    return body


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    """Register the 503 handlers and the identifiable 4xx body (`error_body`)."""

    async def _http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code in (204, 304) or error.status_code < 400:
            return await http_exception_handler(request, error)
        return JSONResponse(
            error_body(request.url.path, error.status_code, error.detail),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    async def _unavailable(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ServiceUnavailable)
        request.app.state.cloud.metrics.db_unavailable.labels(error.reason).inc()
        return unavailable_response(error.reason, retry_after)

    async def _stray_db_error(request: Request, error: Exception) -> JSONResponse:
        # A database error that escaped translate_db_errors() is still an outage, not a
        # client mistake: answer retryably rather than with a bare 500.
        reason = _classify(error)
        log.warning("untranslated database error (%s)", reason, exc_info=error)
        request.app.state.cloud.metrics.db_unavailable.labels(reason).inc()
        return unavailable_response(reason, retry_after)

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(sa_exc.DBAPIError, _stray_db_error)
    app.add_exception_handler(sa_exc.TimeoutError, _stray_db_error)
