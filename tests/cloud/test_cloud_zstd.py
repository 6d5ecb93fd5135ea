"""`Content-Encoding: zstd` bodies: accepted like gzip, under the same limits.

A valid zstd body (one frame or several) is stored; a truncated, empty or foreign body is
400 and stores nothing; a zstd bomb is 413 before it can grow; the limit is inclusive.
"""

from __future__ import annotations

import json

import pytest
import zstandard

JSON = {"Content-Type": "application/json"}
ZSTD = {**JSON, "Content-Encoding": "zstd"}


def zstd(data: bytes, level: int = 1) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def test_zstd_body_is_accepted(api, helpers):
    body = zstd(json.dumps(helpers.batch("cam-1", helpers.seq_records(1, 5))).encode())
    answer = api.post("/log", content=body, headers=ZSTD)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 5
    assert api.get("/stats").json()["total_records"] == 5


def test_multi_frame_zstd_body_is_accepted(api, helpers):
    raw = json.dumps(helpers.batch("cam-1", helpers.seq_records(1, 3))).encode()
    answer = api.post("/log", content=zstd(raw[:10]) + zstd(raw[10:]), headers=ZSTD)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 3


@pytest.mark.parametrize(
    "body",
    [
        b"not zstd at all",
        b"",
        zstd(b'{"a": 1}' * 200)[:-6],
        zstd(b'{"a": 1}') + b"\x00\x00",
    ],  # trailing garbage after a frame
)
def test_bad_zstd_is_400(api, body):
    answer = api.post("/log", content=body, headers=ZSTD)
    assert answer.status_code == 400, answer.text
    assert "zstd" in answer.json()["detail"]
    assert api.get("/stats").json()["total_records"] == 0


def test_zstd_bomb_is_413(make_cloud_client):
    api = make_cloud_client(max_body_bytes=64 * 1024)
    payload = b'{"device_id": "cam-1", "batch_id": "b", "pad": "' + b"0" * 50_000_000 + b'"}'
    bomb = zstd(payload, level=19)
    assert len(bomb) < 64 * 1024
    answer = api.post("/log", content=bomb, headers=ZSTD)
    assert answer.status_code == 413, answer.text
    assert "decompressed" in answer.json()["detail"]
    assert api.get("/stats").json()["total_records"] == 0


def test_zstd_limit_is_inclusive():
    from fastapi import HTTPException

    from cloud.body import decode

    data = b"x" * 5000
    assert decode(zstd(data), "zstd", 5000) == data
    with pytest.raises(HTTPException) as caught:
        decode(zstd(data + b"x"), "zstd", 5000)
    assert caught.value.status_code == 413
