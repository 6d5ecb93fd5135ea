"""The retry classification table and the backoff sequence."""

from __future__ import annotations

import random

import pytest

from edgebuf.delivery.policy import RETRY_AFTER_CAP, Verdict, backoff_delay, classify
from edgebuf.delivery.transport import SendResult, parse_retry_after

ACK = {"accepted": 1, "duplicates": 0}  # the cloud's acknowledgement


@pytest.mark.parametrize(
    "result,verdict",
    [
        (SendResult(200, **ACK), Verdict.ACK),
        (SendResult(201, **ACK), Verdict.ACK),
        (SendResult(204, **ACK), Verdict.ACK),
        # a 2xx without the cloud's acknowledgement (captive portal) proves nothing stored
        (SendResult(200), Verdict.RETRY),
        (SendResult(204), Verdict.RETRY),
        (SendResult(None), Verdict.RETRY),
        (SendResult(408), Verdict.RETRY),
        (SendResult(429), Verdict.RETRY),
        (SendResult(500), Verdict.RETRY),
        (SendResult(502), Verdict.RETRY),
        (SendResult(503, refused="request"), Verdict.RETRY),
        (SendResult(504), Verdict.RETRY),
        (SendResult(401, refused="auth"), Verdict.RETRY),
        (SendResult(403, refused="auth"), Verdict.RETRY),
        (SendResult(403), Verdict.RETRY),
        (SendResult(404), Verdict.RETRY),
        (SendResult(405), Verdict.RETRY),
        (SendResult(413), Verdict.SPLIT),
        (SendResult(413, refused="batch"), Verdict.SPLIT),
        # the cloud's own body refusing the records: bisect, dead-letter the poison
        (SendResult(400, refused="record"), Verdict.REJECT),
        (SendResult(409, refused="record"), Verdict.REJECT),
        (SendResult(422, refused="record"), Verdict.REJECT),
        # the cloud refusing the request itself (bad gzip, Content-Type): not the records
        (SendResult(400, refused="request"), Verdict.RETRY),
        (SendResult(415, refused="request"), Verdict.RETRY),
        # a 4xx that is not the cloud's (nginx's client-certificate 400, a WAF): retry
        (SendResult(400), Verdict.RETRY),
        (SendResult(409), Verdict.RETRY),
        (SendResult(422), Verdict.RETRY),
        (SendResult(302), Verdict.RETRY),
    ],
)
def test_classification_table(result, verdict):
    assert classify(result) is verdict


def test_backoff_is_full_jitter_under_doubling_ceilings():
    rng = random.Random(42)
    delays = [backoff_delay(n, base=2.0, cap=1000.0, rng=rng) for n in range(1, 6)]
    expected_rng = random.Random(42)
    assert delays == [expected_rng.uniform(0, 2.0 * 2 ** (n - 1)) for n in range(1, 6)]
    for n, d in enumerate(delays, start=1):
        assert 0 <= d <= 2.0 * 2 ** (n - 1)


def test_backoff_cap_and_huge_attempts():
    rng = random.Random(1)
    assert all(backoff_delay(n, cap=60.0, rng=rng) <= 60.0 for n in range(1, 200))


def test_retry_after_is_a_floor_and_capped():
    rng = random.Random(0)
    assert backoff_delay(1, base=2.0, rng=rng, retry_after=30.0) == 30.0
    assert backoff_delay(1, rng=rng, retry_after=10_000.0) == RETRY_AFTER_CAP
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_parse_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
