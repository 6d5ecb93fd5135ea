"""`POST /log` client mistakes: each is a 4xx with a JSON `detail`, never a 500.

The status decides what the edge does (413 split, other 4xx dead-letter), so each class
of mistake is pinned to its code, and none of them stores anything.
"""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

JSON = {"Content-Type": "application/json"}


def assert_rejected(api, answer, status: int) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["detail"], body
    assert api.get("/stats").json()["total_records"] == 0
    return body


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b"not json",
        b'{"device_id": "a",}',
        b"\xff\xfe{}",
        b'{"records": [' * 300 + b"]" * 300,
    ],
)
def test_malformed_json_is_400(api, raw):
    assert_rejected(api, api.post("/log", content=raw, headers=JSON), 400)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(api, helpers, constant):
    body = helpers.dumps(helpers.batch("cam-1", [helpers.record("r1")]))
    assert_rejected(
        api, api.post("/log", content=body.replace(b"1764370000.0", constant), headers=JSON), 400
    )
    inside = body.replace(b'"confidence": 0.9', b'"confidence": ' + constant)
    assert_rejected(api, api.post("/log", content=inside, headers=JSON), 400)


def test_word_nan_inside_a_string_is_fine(api, helpers):
    rec = helpers.record("r1", classes=("NaN", "Infinity"))
    assert api.post("/log", json=helpers.batch("cam-1", [rec])).json()["accepted"] == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("device_id"), "device_id"),
        (lambda b: b.pop("batch_id"), "batch_id"),
        (lambda b: b.pop("records"), "records"),
        (lambda b: b["records"][0].pop("record_id"), "record_id"),
        (lambda b: b["records"][0].pop("seq"), "seq"),
        (lambda b: b["records"][0].pop("timestamp"), "timestamp"),
        (lambda b: b["records"][0].pop("prediction"), "prediction"),
    ],
)
def test_missing_field_is_422(api, helpers, mutate, field):
    body = helpers.batch("cam-1", [helpers.record()])
    mutate(body)
    detail = assert_rejected(api, api.post("/log", json=body), 422)["detail"]
    assert any(field in map(str, error["loc"]) for error in detail)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("device_id",), "bad device/id"),
        (("device_id",), ""),
        (("device_id",), "x" * 129),
        (("device_id",), 5),
        (("batch_id",), "b" * 65),
        (("records",), {"not": "a list"}),
        (("records", 0, "record_id"), ""),
        (("records", 0, "record_id"), "r" * 65),
        (("records", 0, "record_id"), "nul\u0000"),
        (("records", 0, "seq"), 0),
        (("records", 0, "seq"), -3),
        (("records", 0, "seq"), 2**63),
        (("records", 0, "seq"), 1.5),
        (("records", 0, "seq"), "one"),
        (("records", 0, "timestamp"), "yesterday"),
        (("records", 0, "timestamp"), None),
        (("records", 0, "image_id"), "i" * 257),
        (("records", 0, "model_version"), "m" * 129),
        (("records", 0, "model_version"), 3),
        (("records", 0, "prediction"), [1, 2]),
        (("records", 0, "prediction"), "text"),
        (("records", 0), "not an object"),
    ],
)
def test_wrong_value_is_422(api, helpers, path, value):
    body = helpers.batch("cam-1", [helpers.record()])
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    detail = assert_rejected(api, api.post("/log", json=body), 422)["detail"]
    assert isinstance(detail, list) and detail[0]["loc"][0] == "body"


def test_top_level_array_is_422(api):
    assert_rejected(api, api.post("/log", json=[1, 2]), 422)


def test_empty_batch_is_422(api, helpers):
    assert_rejected(api, api.post("/log", json=helpers.batch("cam-1", [])), 422)


def test_one_bad_record_rejects_the_whole_batch(api, helpers):
    recs = helpers.seq_records(1, 5)
    recs[3]["seq"] = 0
    detail = assert_rejected(api, api.post("/log", json=helpers.batch("cam-1", recs)), 422)
    assert detail["detail"][0]["loc"] == ["body", "records", 3, "seq"]


def test_error_list_is_capped(api, helpers):
    recs = [{"record_id": ""} for _ in range(200)]
    detail = assert_rejected(api, api.post("/log", json=helpers.batch("cam-1", recs)), 422)
    assert len(detail["detail"]) == 51
    assert detail["detail"][-1]["type"] == "truncated"


def test_too_many_records_is_413(make_cloud_client, helpers):
    api = make_cloud_client(max_batch_records=3)
    assert api.post("/log", json=helpers.batch("c", helpers.seq_records(1, 3))).status_code == 200
    answer = api.post("/log", json=helpers.batch("c", helpers.seq_records(4, 7)))
    assert answer.status_code == 413
    assert "split" in answer.json()["detail"]
    # Even when the records are also invalid, the size verdict comes first: split, not drop.
    bad = helpers.batch("c", [{"record_id": ""}] * 5)
    assert api.post("/log", json=bad).status_code == 413


def test_body_over_limit_is_413(make_cloud_client, helpers):
    api = make_cloud_client(max_body_bytes=4096)
    big = helpers.batch("cam-1", helpers.seq_records(1, 40))
    assert len(json.dumps(big)) > 4096
    assert_rejected(api, api.post("/log", json=big), 413)


def test_streamed_body_over_limit_is_413(make_cloud_client, helpers):
    api = make_cloud_client(max_body_bytes=4096)
    raw = helpers.dumps(helpers.batch("cam-1", helpers.seq_records(1, 40)))

    def chunks():  # no Content-Length: the cap must hold while reading
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]

    assert_rejected(api, api.post("/log", content=chunks(), headers=JSON), 413)


def test_gzip_bomb_is_413(make_cloud_client, helpers):
    api = make_cloud_client(max_body_bytes=64 * 1024)
    payload = b'{"device_id": "cam-1", "batch_id": "b", "pad": "' + b"0" * 50_000_000 + b'"}'
    bomb = gzip.compress(payload, compresslevel=9)
    assert len(bomb) < 64 * 1024
    answer = api.post("/log", content=bomb, headers={**JSON, "Content-Encoding": "gzip"})
    assert_rejected(api, answer, 413)
    assert "decompressed" in answer.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(b'{"a": 1}')[:-6],
        b"",
        zlib.compress(b'{"a": 1}'),
    ],  # zlib (deflate) framing is not gzip
)
def test_bad_gzip_is_400(api, body):
    answer = api.post("/log", content=body, headers={**JSON, "Content-Encoding": "gzip"})
    assert_rejected(api, answer, 400)


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress"])
def test_unsupported_encoding_is_415(api, helpers, encoding):
    answer = api.post(
        "/log",
        content=helpers.dumps(helpers.batch("c", [helpers.record()])),
        headers={**JSON, "Content-Encoding": encoding},
    )
    assert_rejected(api, answer, 415)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_wrong_content_type_is_415(api, helpers, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    raw = helpers.dumps(helpers.batch("c", [helpers.record()]))
    answer = api.post("/log", content=raw, headers=headers)
    assert_rejected(api, answer, 415)


def test_json_content_type_variants_are_accepted(api, helpers):
    raw = helpers.dumps(helpers.batch("c", [helpers.record("r1")]))
    for content_type in (
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.edgebuf+json",
    ):
        answer = api.post("/log", content=raw, headers={"Content-Type": content_type})
        assert answer.status_code == 200, content_type


def test_wrong_method_and_path(api):
    assert api.get("/log").status_code == 405
    assert api.post("/nope", json={}).status_code == 404


# --- the body reader on its own --------------------------------------------------------


def _request(messages: list[dict]):
    from starlette.requests import Request

    async def receive() -> dict:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/log", "headers": []}
    return Request(scope, receive)


def test_client_disconnect_mid_body_is_a_4xx_not_a_crash():
    import asyncio

    from fastapi import HTTPException

    from cloud.body import read_capped

    request = _request(
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    )
    with pytest.raises(HTTPException) as caught:
        asyncio.run(read_capped(request, 1000))
    assert caught.value.status_code == 400


def test_gzip_limit_is_inclusive():
    from fastapi import HTTPException

    from cloud.body import decode

    data = b"x" * 5000
    assert decode(gzip.compress(data), "gzip", 5000) == data
    with pytest.raises(HTTPException) as caught:
        decode(gzip.compress(data + b"x"), "gzip", 5000)
    assert caught.value.status_code == 413
