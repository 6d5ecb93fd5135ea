"""Time buckets of the rollups, and how a time window splits into whole buckets and edges.

A rollup row sums the records of one device whose value (the timestamp, or for
detections floor(timestamp)) falls in one bucket `[b, b + grain)`. Records roll up per
hour, minute and second; detections per hour and minute, on top of the per-second totals
of `detection_counts`. A window
`[since, until)` is answered from the whole buckets it contains, coarsest grain first,
and only what is left at its two edges (less than the finest grain on each side) is read
from the rows. The one rule that makes this exact:

    a value v is counted by the rollup range [a, b) of grain g  <=>  a <= v < b

which holds because `bucket(v, g)` is the exact aligned floor (`bucket <= v <
bucket + g`, a multiple of g), and `a`, `b` are multiples of g. Far out (+-WILD, about
30,000 years, itself a multiple of every grain so no bucket straddles it) a value is its
own bucket (`bucket(v) = v`) and the window bounds are used as they are; the rule above
still holds. The same function is written in SQL (`bucket_sql`) for the
back-fills, and a test checks that both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DETECTION_GRAINS",
    "RECORD_GRAINS",
    "WILD",
    "Cover",
    "align_down",
    "align_up",
    "bucket",
    "bucket_sql",
    "cover",
]

RECORD_GRAINS = (3600, 60, 1)  # prediction_rollups: hours, minutes, seconds; edges from rows
DETECTION_GRAINS = (3600, 60)  # detection_rollups; then detection_counts (seconds)
WILD = 3600.0 * 2**28  # ~9.7e11 s (30,000 years): a multiple of every grain


def bucket(value: float, grain: int) -> float:
    """The start of the grain-`grain` bucket holding `value` (itself when out of range)."""
    if not -WILD < value < WILD:
        return value
    start = math.floor(value / grain) * grain
    if start > value:
        start -= grain
    elif start + grain <= value:
        start += grain
    return float(start)


def align_up(value: float, grain: int) -> float:
    """The smallest bucket start >= value (value itself when out of range)."""
    start = bucket(value, grain)
    return start if start == value or not -WILD < value < WILD else start + grain


def align_down(value: float, grain: int) -> float:
    """The largest bucket start <= value (value itself when out of range)."""
    return bucket(value, grain)


def bucket_sql(column: str, grain: int, dialect: str) -> str:
    """`bucket(column, grain)` as a SQL expression of `dialect` ('sqlite'/'postgresql')."""
    q = f"({column}) / {grain}.0"
    if dialect == "postgresql":
        floor = f"floor({q})"
    else:  # SQLite's floor() needs the math extension; a cast truncates toward zero
        floor = f"(CAST({q} AS INTEGER) - ({q} < CAST({q} AS INTEGER)))"
    start = f"({floor} * {grain})"
    return (
        f"(CASE WHEN ({column}) >= {WILD!r} OR ({column}) <= -{WILD!r} THEN ({column})"
        f" WHEN {start} > ({column}) THEN {start} - {grain}"
        f" WHEN {start} + {grain} <= ({column}) THEN {start} + {grain}"
        f" ELSE {start} END)"
    )


@dataclass(frozen=True)
class Cover:
    """A window as whole buckets per grain plus the ranges left over at its edges.

    `whole` holds (grain, low, high): buckets with low <= start < high (None: unbounded).
    `rest` holds (low, high) value ranges, low inclusive, high exclusive, to read finer.
    """

    whole: tuple[tuple[int, float | None, float | None], ...]
    rest: tuple[tuple[float | None, float | None], ...]


def cover(since: float | None, until: float | None, grains: tuple[int, ...]) -> Cover:
    """Split `[since, until)` into whole buckets (coarse first) and at most two edges."""
    if since is not None and until is not None and since >= until:
        return Cover((), ())
    if not grains:
        return Cover((), ((since, until),))
    grain, finer = grains[0], grains[1:]
    low = None if since is None else align_up(since, grain)
    high = None if until is None else align_down(until, grain)
    if low is not None and high is not None and low >= high:
        return cover(since, until, finer)
    whole = [(grain, low, high)]
    rest: list[tuple[float | None, float | None]] = []
    if since is not None and low is not None and since < low:
        left = cover(since, low, finer)
        whole += left.whole
        rest += left.rest
    if until is not None and high is not None and high < until:
        right = cover(high, until, finer)
        whole += right.whole
        rest += right.rest
    return Cover(tuple(whole), tuple(rest))
