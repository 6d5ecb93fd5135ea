"""Helpers shared by the edge tests (imported as ``support``; conftest is not importable
reliably when several test folders have one)."""

from __future__ import annotations

DET = {"detections": [{"class_name": "part", "confidence": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}]}


def drive(client, clock, *, until=None, steps: int = 2000) -> int:
    """Run the shipping loop on the fake clock, advancing it over every wait the loop asks
    for, until ``until()`` holds (default: nothing pending or in flight). Returns passes."""
    if until is None:

        def until() -> bool:
            counts = client.store.counts()
            return counts["pending"] == 0 and counts["sending"] == 0

    for n in range(steps):
        if until():
            return n
        delay = client.shipper.run_once()
        if delay:
            clock.advance(delay)
    raise AssertionError(f"still not done after {steps} passes: {client.store.counts()}")


def log_n(client, n, prediction=DET):
    """Log ``n`` copies of ``prediction``; return their record ids."""
    return [client.log_prediction(prediction, image_id=f"f{i}") for i in range(n)]


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` until it holds; fail after ``timeout`` real seconds. Tests wait
    for the state they name (a request in flight, a backlog on disk), never a fixed sleep."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
