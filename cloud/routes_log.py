"""`POST /log`: receive one batch from an edge device and store each record exactly once.

Order of checks, cheapest and most fundamental first, so a rejected request costs little
and stores nothing: key (401) → Content-Type / Content-Encoding (415) → declared and
actual size (413) → gzip (400/413) → JSON syntax, NaN included (400) → record count
(413) → schema (422) → device scope of the key (403) → one database transaction (200,
or 503 + Retry-After).
Decoding, validation and the insert run in a worker thread, off the event loop. Valid
bodies skip the pydantic models (see `cloud.wire`); errors are still worded by them.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from cloud.auth import Principal
from cloud.body import check_headers, decode, read_capped
from cloud.models import ErrorResponse, LogResponse
from cloud.state import CloudState, get_state
from cloud.wire import parse_batch

__all__ = ["LOG_OPENAPI", "router"]

router = APIRouter()

MAX_REPORTED_ERRORS = 50

LOG_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A batch of records; may be sent with `Content-Encoding: gzip`.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogBatch"}}},
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Body is not JSON, or not valid gzip (do not retry).",
        401: "Missing or invalid bearer key (nothing stored).",
        403: "The key belongs to another device (nothing stored).",
        413: "Too many records or too many bytes: split the batch.",
        415: "Unsupported Content-Type or Content-Encoding.",
        422: "Body does not match the schema (do not retry).",
        503: "Database unavailable; retry after the Retry-After seconds (nothing stored).",
    }.items()
}


def _validation_failure(error: ValidationError, max_records: int) -> HTTPException:
    errors = error.errors(include_url=False, include_input=False, include_context=False)
    for item in errors:
        if item["type"] == "json_invalid":
            return HTTPException(400, f"body is not valid JSON: {item['msg']}")
        if item["type"] == "too_long" and tuple(item["loc"]) == ("records",):
            return HTTPException(413, f"batch has more than {max_records} records; split it")
    detail = [
        {"loc": ["body", *item["loc"]], "msg": item["msg"], "type": item["type"]}
        for item in errors[:MAX_REPORTED_ERRORS]
    ]
    if len(errors) > MAX_REPORTED_ERRORS:
        detail.append(
            {
                "loc": ["body"],
                "msg": f"{len(errors) - MAX_REPORTED_ERRORS} more errors not shown",
                "type": "truncated",
            }
        )
    return HTTPException(422, detail)


def _ingest(state: CloudState, principal: Principal, raw: bytes, encoding: str) -> dict[str, Any]:
    """Decode, validate, authorize and store; runs in a worker thread."""
    settings = state.settings
    body = decode(raw, encoding, settings.max_body_bytes)
    try:
        batch = parse_batch(body, state.batch_model, settings.max_batch_records)
    except ValidationError as error:
        raise _validation_failure(error, settings.max_batch_records) from None
    principal.require_device(batch.device_id)
    result = state.store.store(batch, received_at=time.time())
    return {
        "batch_id": batch.batch_id,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "_expired": result.expired,
    }


@router.post(
    "/log",
    response_model=LogResponse,
    responses=_ERRORS,
    openapi_extra=LOG_OPENAPI,
    summary="Store a batch of prediction records (idempotent)",
    description=(
        "Stores each record once per (device_id, record_id, timestamp); records already stored are "
        "counted as duplicates, not errors, so a batch may be retried safely. The batch "
        "is one transaction: on any failure nothing of it is stored."
    ),
)
async def post_log(request: Request) -> JSONResponse:
    """Store a batch; see the module docstring for the order of checks."""
    state = get_state(request)
    principal = state.auth.authenticate(request)
    encoding = check_headers(request, state.settings.max_body_bytes)
    raw = await read_capped(request, state.settings.max_body_bytes)
    started = time.perf_counter()
    answer = await run_in_threadpool(_ingest, state, principal, raw, encoding)
    metrics = state.metrics
    metrics.batch_seconds.observe(time.perf_counter() - started)
    metrics.batches.inc()
    metrics.records_accepted.inc(answer["accepted"])
    metrics.records_duplicate.inc(answer["duplicates"])
    expired = answer.pop("_expired")
    if expired:
        metrics.records_expired.inc(expired)  # type: ignore[attr-defined]
    return JSONResponse(answer)
