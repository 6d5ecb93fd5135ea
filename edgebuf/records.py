"""Validation and serialisation of one prediction record, before it touches the disk.

Everything here runs before the SQLite transaction opens, so a bad record is
refused with a clear error and nothing of it is stored. The rules are the wire
contract of ``edgebuf.wire``, which the cloud imports too, so a record the edge stores is
never refused later as poison.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from edgebuf.errors import InvalidRecordError, RecordTypeError
from edgebuf.wire import MAX_DEPTH, MAX_IMAGE_ID, MAX_MODEL_VERSION, text_problem


class NewRecord(NamedTuple):
    """A validated record ready to insert: the prediction is already JSON text.

    A NamedTuple rather than a frozen dataclass: it is built once per logged record, and a
    tuple is the cheapest immutable thing Python builds."""

    prediction_json: str
    image_id: str | None
    timestamp: float
    model_version: str | None
    priority: int


def _to_jsonable(obj: Any) -> Any:
    """Convert what vision code commonly hands over (numpy scalars/arrays, datetimes)."""
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(
    allow_nan=False, ensure_ascii=False, separators=(",", ":"), default=_to_jsonable
)


def _depth(obj: Any) -> int:
    """Maximum nesting depth of dicts/lists, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, Mapping):
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def encode_prediction(prediction: Any, max_bytes: int) -> str:
    """Serialise a prediction dict to compact JSON text, or raise a clear error."""
    if type(prediction) is not dict and not isinstance(prediction, Mapping):
        raise RecordTypeError(
            f"prediction must be a dict (a JSON object), got {type(prediction).__name__}"
        )
    try:
        text = _encoder.encode(prediction)
    except ValueError as exc:  # NaN / Infinity, circular references
        raise InvalidRecordError(f"prediction is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise RecordTypeError(f"prediction is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise InvalidRecordError(f"prediction is nested deeper than {MAX_DEPTH} levels") from None
    try:
        # ASCII text is its own UTF-8: skip the encode on the common path.
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRecordError(
            f"prediction contains a string that is not valid UTF-8: {exc}"
        ) from None
    if size > max_bytes:
        raise InvalidRecordError(
            f"prediction is {size} bytes of JSON, over the limit of {max_bytes} (max_record_bytes)"
        )
    # Counting brackets is cheap and bounds the depth from above; walk only when it could matter.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(prediction) > MAX_DEPTH:
        raise InvalidRecordError(f"prediction is nested deeper than {MAX_DEPTH} levels")
    return text


def _check_text(name: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordTypeError(f"{name} must be a str or None, got {type(value).__name__}")
    problem = text_problem(value, limit)
    if problem is not None:
        raise InvalidRecordError(f"{name} {problem}")
    return value


def normalise_timestamp(timestamp: Any, now: float) -> float:
    """Return epoch seconds for a float/int/aware datetime; ``None`` means now."""
    if timestamp is None:
        return now
    if isinstance(timestamp, dt.datetime):
        if timestamp.tzinfo is None:
            raise InvalidRecordError("timestamp datetime must be timezone-aware (e.g. UTC)")
        return timestamp.timestamp()
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
        raise RecordTypeError(
            f"timestamp must be epoch seconds (float) or an aware datetime, "
            f"got {type(timestamp).__name__}"
        )
    value = float(timestamp)
    if not math.isfinite(value) or value < 0:
        raise InvalidRecordError(
            f"timestamp must be a finite, non-negative epoch time, got {timestamp!r}"
        )
    return value


def default_priority(prediction: Mapping[str, Any]) -> int:
    """Rank frames with an empty ``detections`` list lowest (0); everything else 1."""
    detections = prediction.get("detections", None)
    if isinstance(detections, (list, tuple)) and not detections:
        return 0
    return 1


def prepare_record(
    prediction: Any,
    *,
    image_id: Any = None,
    timestamp: Any = None,
    model_version: Any = None,
    priority: Any = None,
    now: float,
    max_bytes: int,
) -> NewRecord:
    """Validate every argument of ``log_prediction`` and return an insertable record."""
    text = encode_prediction(prediction, max_bytes)
    if priority is None:
        priority = default_priority(prediction)
    elif isinstance(priority, bool) or not isinstance(priority, int):
        raise RecordTypeError(f"priority must be an int, got {type(priority).__name__}")
    return NewRecord(
        text,
        None if image_id is None else _check_text("image_id", image_id, MAX_IMAGE_ID),
        now if timestamp is None else normalise_timestamp(timestamp, now),
        None
        if model_version is None
        else _check_text("model_version", model_version, MAX_MODEL_VERSION),
        priority,
    )


# The keys an item of ``log_predictions`` may carry.
ITEM_KEYS = frozenset({"prediction", "image_id", "model_version", "timestamp", "priority"})


def prepare_records(items: Iterable[Any], *, now: float, max_bytes: int) -> list[NewRecord]:
    """Validate every item of ``log_predictions``; an error names the item's index.

    This loop runs once per record of a bulk call, so the common cases take the cheap
    checks first.
    """
    prepared: list[NewRecord] = []
    append = prepared.append
    for i, item in enumerate(items):
        try:
            if not isinstance(item, Mapping) or "prediction" not in item:
                raise RecordTypeError("must be a dict with a 'prediction' key")
            if len(item) > 1 and not ITEM_KEYS.issuperset(item):
                raise RecordTypeError(f"has unknown keys: {sorted(set(item) - ITEM_KEYS)}")
            get = item.get
            append(
                prepare_record(
                    item["prediction"],
                    image_id=get("image_id"),
                    timestamp=get("timestamp"),
                    model_version=get("model_version"),
                    priority=get("priority"),
                    now=now,
                    max_bytes=max_bytes,
                )
            )
        except (InvalidRecordError, RecordTypeError) as exc:
            raise type(exc)(f"item {i}: {exc}") from None
    return prepared
