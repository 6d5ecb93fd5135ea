"""Retry policy as pure functions: what a response means, and how long to wait.

Classification (the table the tests check):

| response                                  | verdict | what happens                          |
|-------------------------------------------|---------|---------------------------------------|
| 2xx                                       | ACK     | rows -> sent, sent_at set             |
| network error, timeout, 408, 429, 5xx     | RETRY   | rows -> pending, backoff, retry       |
| 401, 403, 404, 405                        | RETRY   | a deployment problem (key, URL), not  |
|                                           |         | bad records: keep them pending        |
| 413                                       | SPLIT   | halve the batch; a single record that |
|                                           |         | is still too large is dead-lettered   |
| any other 4xx (400, 409, 415, 422, ...)   | REJECT  | bisect to find the poison records;    |
|                                           |         | those go to failed, the rest are sent |
"""

from __future__ import annotations

import enum
import random

from edgebuf.delivery.transport import SendResult

RETRY_AFTER_CAP = 600.0
_HOLD_CODES = {401, 403, 404, 405}


class Verdict(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    SPLIT = "split"
    REJECT = "reject"


def classify(result: SendResult) -> Verdict:
    """Decide what one send attempt means for its rows."""
    status = result.status
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.ACK
    if status == 413:
        return Verdict.SPLIT
    if status in (408, 429) or status >= 500 or status in _HOLD_CODES:
        return Verdict.RETRY
    if 400 <= status < 500:
        return Verdict.REJECT
    return Verdict.RETRY  # 1xx/3xx from a misbehaving proxy: not an acknowledgement


def backoff_delay(
    attempt: int,
    *,
    base: float = 2.0,
    cap: float = 60.0,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1 = first retry).

    Exponential with full jitter: uniform(0, min(cap, base * 2**(attempt-1))), i.e. the
    design's 2^n seconds as the ceiling of each draw, so a fleet that lost the cloud at
    the same moment does not retry in lock-step. A server's ``Retry-After`` is a floor.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    ceiling = min(cap, base * (2 ** min(attempt - 1, 62)))
    delay = (rng or random).uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return delay
