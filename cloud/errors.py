"""How failures become HTTP answers, so the edge can tell "retry" from "give up".

The edge retries 408/429/5xx and network errors, splits a batch on 413, and dead-letters
any other 4xx. So every database problem that may go away (unreachable, locked, pool
exhausted, lock timeout, deadlock, a migration rolled back under us) must be a 503 with a
`Retry-After`, and must leave nothing half-written: each batch is one transaction, and
an error inside it rolls the whole transaction back before the 503 is sent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

__all__ = ["ServiceUnavailable", "install_error_handlers", "translate_db_errors"]

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
        {"detail": f"service unavailable: {reason}; retry later"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    """Register the 503 handlers; FastAPI's own handlers already give 4xx a `detail`."""

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

    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(sa_exc.DBAPIError, _stray_db_error)
    app.add_exception_handler(sa_exc.TimeoutError, _stray_db_error)
