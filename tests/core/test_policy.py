"""The retry classification table and the backoff sequence."""

from __future__ import annotations

import random

import pytest

from edgebuf.delivery.policy import RETRY_AFTER_CAP, Verdict, backoff_delay, classify
from edgebuf.delivery.transport import SendResult, parse_retry_after


@pytest.mark.parametrize(
    "status,verdict",
    [
        (200, Verdict.ACK),
        (201, Verdict.ACK),
        (204, Verdict.ACK),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (401, Verdict.RETRY),
        (403, Verdict.RETRY),
        (404, Verdict.RETRY),
        (405, Verdict.RETRY),
        (413, Verdict.SPLIT),
        (400, Verdict.REJECT),
        (409, Verdict.REJECT),
        (415, Verdict.REJECT),
        (422, Verdict.REJECT),
        (302, Verdict.RETRY),
    ],
)
def test_classification_table(status, verdict):
    assert classify(SendResult(status)) is verdict


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
