"""The `POST /log` body from JSON bytes to plain tuples, without building pydantic models.

`LogBatch` (cloud.models) is the contract and the only source of error messages. Running
it on every body, though, costs more than the insert itself: a Python validator call per
field per record, a model instance per record, and garbage for the collector. So valid
bodies take a fast path:

1. `pydantic_core.from_json` parses the body with the very parser (jiter) that
   `LogBatch.model_validate_json` uses, so both read the same bytes as the same values
   (duplicate keys, big integers, escapes, nesting limit); `allow_inf_nan=False`
   refuses NaN/Infinity like the strict check of the slow path.
2. A hand-written check accepts a body only if every field is of the plain, common form
   that `LogBatch` certainly accepts with the same value: strings within their lengths and
   without NUL, `seq` a JSON integer in range, `timestamp` a finite JSON number, and
   `prediction` a JSON object.

Anything else - an ISO-8601 timestamp, a float `seq` that pydantic's lax mode would take,
a wrong type, too many records, invalid JSON - falls back to `LogBatch` itself, which
either accepts it (its values are then used) or raises the `ValidationError` that the
route turns into the documented 400/413/422. The fast path therefore never changes what
is accepted, only how quickly; `tests/cloud/test_cloud_ingest_path.py` checks that.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic_core import from_json

from cloud.models import LogBatch
from edgebuf.wire import (
    DEVICE_ID_PATTERN,
    MAX_IMAGE_ID,
    MAX_MODEL_VERSION,
    MAX_RECORD_ID,
    MAX_SEQ,
)

__all__ = ["Batch", "Record", "check_no_nan", "parse_batch"]

# (record_id, seq, image_id, timestamp, model_version, prediction), as in PredictionRecord.
Record = tuple[str, int, "str | None", float, "str | None", dict[str, Any]]

# pydantic's regex engine anchors `$` at the very end; Python's `$` would also match
# before a trailing newline, so the pattern is used with fullmatch and without anchors.
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN.removeprefix("^").removesuffix("$"))
_EXACT_INT_FLOAT = 2**53  # beyond this, int -> float rounding is not worth reasoning about


@dataclass(frozen=True, slots=True)
class Batch:
    """A validated `POST /log` body."""

    device_id: str
    batch_id: str
    records: list[Record]


def _text(value: object, max_length: int) -> bool:
    return type(value) is str and 0 < len(value) <= max_length and "\x00" not in value


def _optional_text(value: object, max_length: int) -> bool:
    return value is None or (
        type(value) is str and len(value) <= max_length and "\x00" not in value
    )


def _fast(data: object, max_records: int) -> Batch | None:
    """Return the batch if it is of the plain form `LogBatch` accepts as is, else None."""
    if type(data) is not dict:
        return None
    device_id = data.get("device_id")
    batch_id = data.get("batch_id")
    items = data.get("records")
    if (
        type(device_id) is not str
        or len(device_id) > 128
        or _DEVICE_ID.fullmatch(device_id) is None
        or not _text(batch_id, 64)
        or type(items) is not list
        or not 0 < len(items) <= max_records
    ):
        return None
    records: list[Record] = []
    append = records.append
    isfinite = math.isfinite
    for item in items:
        if type(item) is not dict:
            return None
        record_id = item.get("record_id")
        seq = item.get("seq")
        timestamp = item.get("timestamp")
        prediction = item.get("prediction")
        image_id = item.get("image_id")
        model_version = item.get("model_version")
        if (
            type(record_id) is not str
            or not 0 < len(record_id) <= MAX_RECORD_ID
            or "\x00" in record_id
            or type(seq) is not int
            or not 1 <= seq <= MAX_SEQ
            or type(prediction) is not dict
            or not _optional_text(image_id, MAX_IMAGE_ID)
            or not _optional_text(model_version, MAX_MODEL_VERSION)
        ):
            return None
        kind = type(timestamp)
        if kind is int:
            if not -_EXACT_INT_FLOAT <= timestamp <= _EXACT_INT_FLOAT:  # type: ignore[operator]
                return None
            timestamp = float(timestamp)  # type: ignore[arg-type]
        elif kind is not float or not isfinite(timestamp):  # type: ignore[arg-type]
            return None
        append((record_id, seq, image_id, timestamp, model_version, prediction))  # type: ignore[arg-type]
    return Batch(device_id, batch_id, records)  # type: ignore[arg-type]


def _reject_constant(name: str) -> float:
    raise ValueError(name)


def check_no_nan(body: bytes) -> None:
    """Refuse NaN/Infinity, which Python and pydantic parse but JSON (RFC 8259) forbids.

    Stored predictions must stay valid JSON for every reader. The substring test is a
    memchr-speed pre-filter; only bodies that contain the words pay for a strict parse.
    """
    if b"NaN" not in body and b"Infinity" not in body:
        return
    try:
        json.loads(body, parse_constant=_reject_constant)
    except ValueError as error:
        if str(error) in ("NaN", "Infinity", "-Infinity"):
            raise HTTPException(
                400, f"body is not valid JSON: {error} is not a JSON number"
            ) from None
    except RecursionError:
        pass  # too deeply nested: pydantic reports it as invalid JSON next


def parse_batch(body: bytes, model: type[LogBatch], max_records: int) -> Batch:
    """Validate a decoded body: the fast path, else `model` (raises its ValidationError).

    `model` is the app's `LogBatch` with `records` capped at `max_records`.
    """
    try:
        data = from_json(body, allow_inf_nan=False)
    except ValueError:
        pass  # invalid JSON, NaN, too deep: the slow path words the error
    else:
        batch = _fast(data, max_records)
        if batch is not None:
            return batch
    check_no_nan(body)
    parsed = model.model_validate_json(body)
    return Batch(
        parsed.device_id,
        parsed.batch_id,
        [
            (r.record_id, r.seq, r.image_id, r.timestamp, r.model_version, r.prediction)
            for r in parsed.records
        ],
    )
