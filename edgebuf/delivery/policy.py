"""Retry policy as pure functions: what a response means, and how long to wait.

Classification (the table the tests check). Records are dead-lettered only on positive
evidence that the refusal is about them: the cloud's own error body saying so, or a single
record refused while the rest of the same batch was accepted. A proxy's answer (nginx's
400 for a missing or bad client certificate, a WAF's 403, a captive portal's 200 page) is
a retryable, visible fault.

| response                                  | verdict | what happens                          |
|-------------------------------------------|---------|---------------------------------------|
| 2xx that is the cloud's acknowledgement   | ACK     | rows -> sent, sent_at set             |
| any other 2xx (a captive portal's page)   | RETRY   | rows -> pending: nothing proves them  |
|                                           |         | stored                                |
| network/TLS error, timeout, 408, 429, 5xx | RETRY   | rows -> pending, backoff, retry       |
| 401, 403, 404, 405                        | RETRY   | a deployment problem (key, URL), not  |
|                                           |         | bad records: keep them pending        |
| 413                                       | SPLIT   | halve the batch; a single record that |
|                                           |         | is still too large is dead-lettered   |
|                                           |         | if the cloud said so or the rest of   |
|                                           |         | its batch was accepted, else RETRY    |
| other 4xx with the cloud's body refusing  | REJECT  | bisect to find the poison records;    |
| the records (``refused == "record"``)     |         | those go to failed, the rest are sent |
| any other 4xx (HTML 400, proxy's 403...)  | RETRY   | rows -> pending, fault shown          |
"""

from __future__ import annotations

import enum
import random

from edgebuf.delivery.transport import REFUSED_RECORD, SendResult

RETRY_AFTER_CAP = 600.0
_HOLD_CODES = {401, 403, 404, 405}


class Verdict(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    SPLIT = "split"
    REJECT = "reject"


def is_ack(result: SendResult) -> bool:
    """A 2xx carrying the cloud's acknowledgement (its ``accepted`` and ``duplicates``)."""
    return (
        result.status is not None
        and 200 <= result.status < 300
        and result.accepted is not None
        and result.duplicates is not None
    )


def classify(result: SendResult) -> Verdict:
    """Decide what one send attempt means for its rows."""
    status = result.status
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.ACK if is_ack(result) else Verdict.RETRY
    if status == 413:
        return Verdict.SPLIT
    if status in (408, 429) or status >= 500 or status in _HOLD_CODES:
        return Verdict.RETRY
    if 400 <= status < 500 and result.refused == REFUSED_RECORD:
        return Verdict.REJECT
    return Verdict.RETRY  # a 4xx not from the cloud, or 1xx/3xx from a misbehaving proxy


def fault_kind(result: SendResult) -> str:
    """The ``edgebuf.delivery.state`` fault kind of a failed attempt, for status."""
    if result.fault:
        return result.fault
    if result.status is None:
        return "network"
    if 200 <= result.status < 300:
        return "not_ack"
    if 400 <= result.status < 500 and result.refused is None:
        return "proxy"
    return "cloud"


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
