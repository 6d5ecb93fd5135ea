"""The retention window: which records are too old to keep (`EDGEBUF_RETENTION_DAYS`).

The cutoff is a UTC day boundary, so maintenance can drop whole day partitions and whole
rollup buckets (hours and minutes divide a day) and every figure stays exact: a record
is expired exactly when its timestamp is below the cutoff.
"""

from __future__ import annotations

import math

__all__ = ["DAY", "retention_cutoff"]

DAY = 86_400


def retention_cutoff(now: float, days: float) -> float:
    """The start of the oldest UTC day still kept when keeping `days` days before `now`."""
    return float(math.floor((now - days * DAY) / DAY) * DAY)
