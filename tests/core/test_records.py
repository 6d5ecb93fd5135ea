"""Bad input is refused at the call with a clear error, and nothing is stored."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from edgebuf import InvalidRecordError, RecordTypeError
from edgebuf.records import MAX_DEPTH, default_priority, prepare_record


def prep(prediction, **kw):
    kw.setdefault("now", 1000.0)
    kw.setdefault("max_bytes", 10_000)
    return prepare_record(prediction, **kw)


def test_valid_record_is_compact_json():
    rec = prep({"detections": [{"c": 1.5}]}, image_id="f1", model_version="v1")
    assert rec.prediction_json == '{"detections":[{"c":1.5}]}'
    assert (rec.image_id, rec.model_version, rec.timestamp, rec.priority) == ("f1", "v1", 1000.0, 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf])
def test_nan_and_infinity_are_refused(bad):
    with pytest.raises(InvalidRecordError, match="not valid JSON"):
        prep({"confidence": bad})


@pytest.mark.parametrize("bad", [object(), b"bytes", {1, 2}.__iter__()])
def test_unserialisable_objects_are_type_errors(bad):
    with pytest.raises(RecordTypeError, match="not JSON-serialisable"):
        prep({"x": bad})


def test_numpy_like_values_are_converted():
    class Arr:
        def tolist(self):
            return [1, 2]

    assert prep({"box": Arr(), "t": (1, 2)}).prediction_json == '{"box":[1,2],"t":[1,2]}'


@pytest.mark.parametrize("bad", [None, [1, 2], "text", 3])
def test_prediction_must_be_a_dict(bad):
    with pytest.raises(RecordTypeError, match="must be a dict"):
        prep(bad)


def test_size_limit():
    with pytest.raises(InvalidRecordError, match="over the limit"):
        prep({"blob": "x" * 20_000})


def test_deep_nesting_is_refused():
    deep: dict = {}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(InvalidRecordError, match="nested deeper"):
        prep(deep, max_bytes=100_000)


def test_very_deep_nesting_does_not_crash():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidRecordError, match="nested deeper"):
        prep({"d": deep}, max_bytes=10_000_000)


def test_non_utf8_string_is_refused():
    with pytest.raises(InvalidRecordError, match="UTF-8"):
        prep({"label": "bad \udcff surrogate"})
    with pytest.raises(InvalidRecordError, match="UTF-8"):
        prep({}, image_id="\ud800")


@pytest.mark.parametrize(
    "field,value,error",
    [
        ("image_id", 123, RecordTypeError),
        ("image_id", "x" * 300, InvalidRecordError),
        ("model_version", 1.0, RecordTypeError),
        ("timestamp", "2024-01-01", RecordTypeError),
        ("timestamp", True, RecordTypeError),
        ("timestamp", float("nan"), InvalidRecordError),
        ("timestamp", -5.0, InvalidRecordError),
        ("timestamp", dt.datetime(2024, 1, 1), InvalidRecordError),
        ("priority", "high", RecordTypeError),
    ],
)
def test_wrong_types_and_values(field, value, error):
    with pytest.raises(error):
        prep({}, **{field: value})


def test_aware_datetime_timestamp():
    when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert prep({}, timestamp=when).timestamp == when.timestamp()


def test_errors_are_valueerror_and_typeerror_subclasses():
    assert issubclass(InvalidRecordError, ValueError)
    assert issubclass(RecordTypeError, TypeError)


def test_default_priority_ranks_empty_frames_lowest():
    assert default_priority({"detections": []}) == 0
    assert default_priority({"detections": [{"c": 1}]}) == 1
    assert default_priority({"other": 1}) == 1
