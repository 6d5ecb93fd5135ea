"""The wire contract: request and response bodies of the cloud API as pydantic models.

These models are the one place the contract is written down; the OpenAPI document is
generated from them. Unknown fields are ignored (forward compatibility: a newer edge may
send more), but every value that reaches a database column is bounded here, so a valid
request can never fail in the database with an error the edge would retry forever.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
)

from edgebuf.wire import (
    DEVICE_ID_PATTERN,
    MAX_DEVICE_ID,
    MAX_IMAGE_ID,
    MAX_MODEL_VERSION,
    MAX_RECORD_ID,
    MAX_SEQ,
)

__all__ = [
    "DEVICE_ID_PATTERN",
    "MAX_SEQ",
    "DeviceStats",
    "ErrorResponse",
    "GapsResponse",
    "LogBatch",
    "LogResponse",
    "ModelVersionCount",
    "PredictionRecord",
    "PredictionsPage",
    "StatsResponse",
    "StoredPrediction",
    "WatermarkResponse",
    "batch_model",
    "parse_epoch",
]

_DATETIME = TypeAdapter(datetime)


def _no_nul(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; refusing it here keeps it a 422, not a 503 loop.
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _json_integer(value: object) -> object:
    # pydantic's lax mode would read true as 1 and "5" as 5; the contract says integer.
    if isinstance(value, (bool, str)):
        raise ValueError("must be an integer")
    return value


def parse_epoch(value: object) -> object:
    """Turn an ISO-8601 string into epoch seconds (naive means UTC); pass numbers on.

    A numeric string is epoch seconds as written (pydantic's own datetime parsing would
    read large values as milliseconds). JSON true/false is refused, not read as 1/0.
    """
    if isinstance(value, bool):
        raise ValueError("must be epoch seconds (number) or an ISO-8601 date-time string")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            moment = _DATETIME.validate_python(value)
        except ValidationError:
            raise ValueError(
                "must be epoch seconds (number) or an ISO-8601 date-time string"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return value


DeviceId = Annotated[
    str,
    Field(
        min_length=1, max_length=MAX_DEVICE_ID, pattern=DEVICE_ID_PATTERN, examples=["line1-cam3"]
    ),
]
# Documents what `_no_nul` enforces (the validator gives the clearer error message).
_NUL_FREE: dict[str, Any] = {"pattern": r"^[^\x00]*$"}
Text64 = Annotated[
    str,
    Field(min_length=1, max_length=MAX_RECORD_ID, json_schema_extra=_NUL_FREE),
    AfterValidator(_no_nul),
]
EpochSeconds = Annotated[
    float,
    BeforeValidator(parse_epoch),
    Field(allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
            "description": "Epoch seconds (UTC), or an ISO-8601 date-time (naive means UTC).",
        }
    ),
]


class PredictionRecord(BaseModel):
    """One YOLO prediction as the edge sends it."""

    model_config = ConfigDict(extra="ignore")

    record_id: Text64 = Field(description="Unique per device; the idempotency key.")
    seq: Annotated[int, BeforeValidator(_json_integer)] = Field(
        ge=1, le=MAX_SEQ, description="Per-device sequence number from the edge."
    )
    image_id: (
        Annotated[
            str,
            Field(max_length=MAX_IMAGE_ID, json_schema_extra=_NUL_FREE),
            AfterValidator(_no_nul),
        ]
        | None
    ) = None
    timestamp: EpochSeconds
    model_version: (
        Annotated[
            str,
            Field(max_length=MAX_MODEL_VERSION, json_schema_extra=_NUL_FREE),
            AfterValidator(_no_nul),
        ]
        | None
    ) = None
    prediction: dict[str, Any] = Field(description="Stored verbatim as JSON text.")


class LogBatch(BaseModel):
    """Body of `POST /log`: one device's batch of records."""

    model_config = ConfigDict(extra="ignore")

    device_id: DeviceId
    batch_id: Text64
    records: list[PredictionRecord] = Field(min_length=1)


def batch_model(max_records: int) -> type[LogBatch]:
    """Return `LogBatch` with `records` capped at `max_records` (the per-app setting).

    The cap lives in the model so pydantic stops at the length check (a `too_long` error,
    answered with 413) and the OpenAPI document shows the configured `maxItems`.
    """
    return create_model(
        "LogBatch",
        __base__=LogBatch,
        __doc__=LogBatch.__doc__,
        records=(list[PredictionRecord], Field(min_length=1, max_length=max_records)),
    )


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx answer: what was wrong (a message or a list of errors)."""

    detail: str | list[dict[str, Any]]


class LogResponse(BaseModel):
    """Answer to `POST /log`: how many records were new and how many already stored."""

    batch_id: str
    accepted: int = Field(description="Records stored by this request.")
    duplicates: int = Field(description="Records already stored (or repeated in the batch).")


class StoredPrediction(BaseModel):
    """One stored record as returned by `GET /predictions`."""

    record_id: str
    seq: int
    image_id: str | None
    device_id: str
    timestamp: float
    model_version: str | None
    prediction: dict[str, Any]
    received_at: float


class PredictionsPage(BaseModel):
    """One page of `GET /predictions`; pass `next_cursor` back to get the next page."""

    items: list[StoredPrediction]
    next_cursor: str | None


class DeviceStats(BaseModel):
    """Per-device figures of `GET /stats`."""

    device_id: str
    count: int
    first_timestamp: float | None
    last_timestamp: float | None
    last_received_at: float | None
    min_seq: int | None
    max_seq: int | None
    missing_seqs: int = Field(description="Seqs absent between min_seq and max_seq.")


class ModelVersionCount(BaseModel):
    """Records per model version (null when the edge sent none)."""

    model_version: str | None
    count: int


class StatsResponse(BaseModel):
    """Answer to `GET /stats`, all computed by SQL aggregates."""

    total_records: int
    device_count: int
    first_timestamp: float | None
    last_timestamp: float | None
    last_received_at: float | None
    devices: list[DeviceStats]
    model_versions: list[ModelVersionCount]
    detections_per_class: dict[str, int]


class GapsResponse(BaseModel):
    """Answer to `GET /devices/{device_id}/gaps`: missing seq ranges, inclusive."""

    device_id: str
    min_seq: int
    max_seq: int
    count: int
    missing: int
    gaps: list[tuple[int, int]]


class WatermarkResponse(BaseModel):
    """Answer to `GET /devices/{device_id}/watermark`: which seqs the cloud holds.

    "Held" means acknowledged: stored, or accepted as expired under retention. An unknown
    device holds nothing (zeros, no ranges).
    """

    device_id: str
    contiguous_through: int = Field(
        description="Highest W such that every seq in [1, W] is held (0 if seq 1 is not)."
    )
    max_seq: int = Field(description="Highest seq held (0 when none).")
    count: int = Field(description="Number of distinct seqs held.")
    missing: list[tuple[int, int]] = Field(
        description="Inclusive ranges of seqs not held, inside [max(from_seq, "
        "contiguous_through + 1), max_seq], ascending, at most `limit` of them."
    )
    complete: bool = Field(
        description="False when `missing` was cut at `limit` (seqs above the last listed "
        "range's end are then not reported on)."
    )
