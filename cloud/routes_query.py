"""Read endpoints: `/stats`, `/predictions` (keyset pages), `/devices/{id}/gaps` and
`/devices/{id}/watermark` (what the edge reconciles against).

They are plain `def` endpoints, so FastAPI runs their database work in its threadpool and
the event loop keeps serving `/log` and `/health`. When keys are configured they need
one; a device key may only read its own device (and must name it).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import WithJsonSchema

from cloud.auth import Principal
from cloud.models import (
    DEVICE_ID_PATTERN,
    MAX_SEQ,
    ErrorResponse,
    GapsResponse,
    PredictionsPage,
    StatsResponse,
    WatermarkResponse,
    parse_epoch,
)
from cloud.queries import Filters, device_gaps, predictions_page, stats, watermark
from cloud.state import get_state

__all__ = ["router"]

router = APIRouter()


async def _principal(request: Request) -> Principal:
    return get_state(request).auth.authenticate(request)


Caller = Annotated[Principal, Depends(_principal)]
DeviceFilter = Annotated[
    str | None,
    Query(max_length=128, pattern=DEVICE_ID_PATTERN, description="Only this device."),
]
TimeBound = Annotated[
    str | None,
    Query(description="Epoch seconds or ISO-8601; since inclusive, until exclusive."),
    # Parsed by `_epoch`, so document what it accepts rather than "any string".
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}),
]
_READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid key."},
    403: {"model": ErrorResponse, "description": "Device key used for another device."},
    503: {"model": ErrorResponse, "description": "Database unavailable; retry later."},
}


def _invalid_query(name: str, message: str) -> HTTPException:
    """A 422 in the shape of FastAPI's own (the documented `HTTPValidationError`)."""
    return HTTPException(422, [{"loc": ["query", name], "msg": message, "type": "value_error"}])


def _epoch(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        epoch = float(parse_epoch(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _invalid_query(
            name, f"must be epoch seconds or an ISO-8601 date-time, got {value!r}"
        ) from None
    if not math.isfinite(epoch):
        raise _invalid_query(name, "must be finite")
    return epoch


def _filters(
    principal: Principal, device_id: str | None, since: str | None, until: str | None
) -> Filters:
    principal.require_device(device_id)
    return Filters(device_id, _epoch("since", since), _epoch("until", until))


@router.get("/stats", response_model=StatsResponse, responses=_READ_ERRORS)
def get_stats(
    request: Request,
    principal: Caller,
    device_id: DeviceFilter = None,
    since: TimeBound = None,
    until: TimeBound = None,
) -> JSONResponse:
    """Totals, per-device figures, per-model-version counts and detections per class."""
    filters = _filters(principal, device_id, since, until)
    return JSONResponse(stats(get_state(request).db, filters))


@router.get("/predictions", response_model=PredictionsPage, responses=_READ_ERRORS)
def get_predictions(
    request: Request,
    principal: Caller,
    device_id: DeviceFilter = None,
    since: TimeBound = None,
    until: TimeBound = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Annotated[
        str | None,
        Query(
            max_length=19, pattern=r"^[0-9]+$", description="`next_cursor` of the previous page."
        ),
    ] = None,
) -> JSONResponse:
    """Stored records in storage order, one page at a time (opaque cursor)."""
    filters = _filters(principal, device_id, since, until)
    after_id = None
    if cursor is not None:
        if not (cursor.isascii() and cursor.isdigit()):
            raise _invalid_query("cursor", f"invalid cursor {cursor!r}")
        # Every id fits a BIGINT, so a larger cursor means "after all of them" (empty page).
        after_id = min(int(cursor), MAX_SEQ)
    items, next_id = predictions_page(get_state(request).db, filters, limit, after_id)
    return JSONResponse({"items": items, "next_cursor": None if next_id is None else str(next_id)})


@router.get(
    "/devices/{device_id}/gaps",
    response_model=GapsResponse,
    responses={**_READ_ERRORS, 404: {"model": ErrorResponse, "description": "Unknown device."}},
)
def get_gaps(
    request: Request,
    principal: Caller,
    device_id: Annotated[str, Path(max_length=128, pattern=DEVICE_ID_PATTERN)],
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most gap ranges to list.")] = 1000,
) -> JSONResponse:
    """Missing seq ranges `[start, end]` (inclusive) between the device's min and max seq."""
    principal.require_device(device_id)
    answer = device_gaps(get_state(request).db, device_id, limit)
    if answer is None:
        raise HTTPException(404, f"no records stored for device {device_id!r}")
    return JSONResponse(answer)


@router.get(
    "/devices/{device_id}/watermark",
    response_model=WatermarkResponse,
    responses=_READ_ERRORS,
)
def get_watermark(
    request: Request,
    principal: Caller,
    device_id: Annotated[str, Path(max_length=128, pattern=DEVICE_ID_PATTERN)],
    from_seq: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Report missing seqs from this one up.")
    ] = 1,
    limit: Annotated[
        int, Query(ge=1, le=100_000, description="Most missing ranges to list.")
    ] = 1000,
) -> JSONResponse:
    """Which seqs the cloud holds: a watermark, the highest seq and the missing ranges."""
    principal.require_device(device_id)
    return JSONResponse(watermark(get_state(request).db, device_id, from_seq, limit))
