"""The wire contract (``edgebuf.wire``) holds on both sides: whatever ``log_prediction``
accepts, the cloud's ``POST /log`` stores; whatever text field the edge refuses, the cloud
refuses too. A record the edge stores is therefore never dead-lettered as poison later."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebuf.delivery.sender import build_body
from edgebuf.errors import InvalidRecordError, RecordTypeError
from edgebuf.records import prepare_record
from edgebuf.store import BufferedRecord
from edgebuf.wire import MAX_IMAGE_ID, MAX_MODEL_VERSION

# Text as vision code produces it, plus what breaks naive checks: NUL, lone surrogates,
# other control characters, non-BMP characters, and lengths around the limits.
_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None), max_size=20),  # includes lone surrogates
    st.sampled_from(
        [
            "frame\x00x",
            "\x00",
            "a\ud800b",
            "é" * 300,
            "x" * 128,
            "x" * 129,
            "x" * 256,
            "x" * 257,
            "",
            "\n",
            "\x7f\x1b",
        ]
    ),  # fmt: skip
)
_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False,
    allow_infinity=False), st.text(max_size=20),
)  # fmt: skip
_prediction = st.recursive(
    st.dictionaries(st.text(max_size=10), _json_scalar, max_size=4),
    lambda inner: st.dictionaries(
        st.text(max_size=10),
        st.one_of(_json_scalar, inner, st.lists(inner, max_size=3)),
        max_size=3,
    ),
    max_leaves=20,
)
_SETTINGS = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def _post(api: Any, device: str, record: BufferedRecord) -> Any:
    body = build_body(device, uuid.uuid4().hex, [record])
    return api.post("/log", content=body, headers={"Content-Type": "application/json"})


def _wire(text: str, image_id: str | None, ts: float, version: str | None) -> BufferedRecord:
    return BufferedRecord(1, uuid.uuid4().hex, "cam-1", 1, image_id, ts, version, text, 0)


@_SETTINGS
@given(prediction=_prediction, image_id=st.one_of(st.none(), _text),
       model_version=st.one_of(st.none(), _text),
       timestamp=st.one_of(st.none(), st.floats(0, 4e9), st.integers(0, 2**40)))  # fmt: skip
def test_what_the_edge_accepts_the_cloud_stores(
    api, prediction, image_id, model_version, timestamp
):
    try:
        rec = prepare_record(prediction, image_id=image_id, model_version=model_version,
                             timestamp=timestamp, now=1.0e9, max_bytes=1 << 20)  # fmt: skip
    except (InvalidRecordError, RecordTypeError):
        return  # refused at the boundary: nothing stored, nothing sent
    wire = _wire(rec.prediction_json, rec.image_id, rec.timestamp, rec.model_version)
    answer = _post(api, "cam-1", wire)
    assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    assert answer.json()["accepted"] + answer.json()["duplicates"] == 1


@_SETTINGS
@given(image_id=_text, model_version=_text)
def test_text_the_edge_refuses_the_cloud_refuses(api, image_id, model_version):
    for field, value, limit in (("image_id", image_id, MAX_IMAGE_ID),
                                ("model_version", model_version, MAX_MODEL_VERSION)):  # fmt: skip
        try:
            prepare_record({"ok": 1}, now=1.0, max_bytes=1 << 20, **{field: value})
        except InvalidRecordError:
            edge_ok = False
        else:
            edge_ok = True
        # What the cloud would receive if an edge sent it anyway (JSON escapes what UTF-8
        # cannot carry, such as a lone surrogate, as \\uXXXX).
        record = {"record_id": uuid.uuid4().hex, "seq": 1, "timestamp": 1.0,
                  "prediction": {"ok": 1}, field: value}  # fmt: skip
        body = json.dumps({"device_id": "cam-1", "batch_id": "b", "records": [record]})
        status = api.post(
            "/log", content=body, headers={"Content-Type": "application/json"}
        ).status_code
        assert (status == 200) == edge_ok, (field, value[:40], len(value), limit, status)


@pytest.mark.parametrize("field", ["image_id", "model_version"])
def test_nul_in_a_text_field_is_refused_at_the_edge(field):
    with pytest.raises(InvalidRecordError, match="NUL"):
        prepare_record({"ok": 1}, now=1.0, max_bytes=1 << 20, **{field: "frame\x00x"})
