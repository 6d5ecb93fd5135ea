"""The backlog lane's concurrency policy on a fake clock, no sockets.

A tiny model of a link drives it: ``n`` requests in flight on a pipe of round trip ``rtt``
that can carry ``capacity`` requests at once take ``max(rtt, n * rtt / capacity)`` each
(below the bandwidth-delay product the round trip is flat; beyond it, requests queue).
"""

from __future__ import annotations

import pytest

from edgebuf.clock import FakeClock
from edgebuf.delivery.concurrency import AdaptiveConcurrency, FixedConcurrency


def drive(
    policy: AdaptiveConcurrency,
    clock: FakeClock,
    rtt: float,
    capacity: float,
    seconds: float,
    fail: bool = False,
) -> list[int]:
    """Run the model for ``seconds``: each round, ``limit`` requests go out and come back."""
    limits = []
    end = clock.monotonic() + seconds
    while clock.monotonic() < end:
        n = policy.limit
        policy.note_in_flight(n)
        took = max(rtt, n * rtt / capacity)
        clock.advance(took)
        for _ in range(n):
            policy.on_response(took, ok=not fail)
        limits.append(policy.limit)
    return limits


def test_grows_to_fill_a_long_thin_pipe_quickly() -> None:
    clock = FakeClock()
    policy = AdaptiveConcurrency(clock, initial=2, max_limit=64)
    limits = drive(policy, clock, rtt=0.6, capacity=22, seconds=30)
    # Slow start: 2 -> 4 -> 8 -> 16 -> 32 within a few round trips, not 20 windows.
    assert max(limits[:8]) >= 22, limits
    # Then it settles around the pipe: never below what fills it by much, never to max.
    settled = limits[len(limits) // 2 :]
    assert min(settled) >= 0.8 * 22 and max(settled) <= 1.6 * 22, settled


def test_stays_low_when_one_request_already_fills_the_pipe() -> None:
    clock = FakeClock()
    policy = AdaptiveConcurrency(clock, initial=2, max_limit=32)
    limits = drive(policy, clock, rtt=0.6, capacity=1.5, seconds=60)
    assert max(limits[len(limits) // 2 :]) <= 4, limits  # more only queues


def test_halves_on_429_or_503_once_per_window() -> None:
    clock = FakeClock()
    policy = AdaptiveConcurrency(clock, initial=2, max_limit=64)
    drive(policy, clock, rtt=0.1, capacity=100, seconds=2)
    before = policy.limit
    assert before == 64
    clock.advance(0.1)
    for _ in range(before):  # every request in flight answered 503 at once
        policy.on_response(0.1, ok=False)
    assert policy.limit == before // 2  # one halving for the burst, not 64
    drive(policy, clock, rtt=0.1, capacity=100, seconds=1, fail=True)
    assert policy.limit == 1  # a cloud that keeps refusing gets one request at a time
    assert not policy.slow_start


def test_backs_off_on_rising_round_trips() -> None:
    clock = FakeClock()
    policy = AdaptiveConcurrency(clock, initial=16, max_limit=32)
    drive(policy, clock, rtt=0.2, capacity=100, seconds=2)  # flat: at the max
    assert policy.limit == 32
    # the cloud's database slows down: every round trip is 3x what it was
    drive(policy, clock, rtt=0.6, capacity=100, seconds=1.5)
    assert policy.limit < 32 and policy.decreases >= 1


def test_grows_only_when_the_window_was_really_full() -> None:
    clock = FakeClock()
    policy = AdaptiveConcurrency(clock, initial=2, max_limit=32)
    for _ in range(50):  # one request at a time in flight (the backlog ran short)
        policy.note_in_flight(1)
        clock.advance(0.1)
        policy.on_response(0.1, ok=True)
    assert policy.limit == 2


@pytest.mark.parametrize("maximum", [1, 3, 8])
def test_bounded_by_the_setting(maximum: int) -> None:
    clock = FakeClock()
    policy = AdaptiveConcurrency(clock, initial=2, max_limit=maximum)
    limits = drive(policy, clock, rtt=0.1, capacity=1000, seconds=5)
    assert max(limits) == maximum and min(limits) >= 1


def test_fixed_is_fixed() -> None:
    fixed = FixedConcurrency(2)
    fixed.note_in_flight(2)
    fixed.on_response(9.0, ok=False)
    assert fixed.limit == 2 and not fixed.adaptive
