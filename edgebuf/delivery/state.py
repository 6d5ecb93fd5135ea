"""``DeliveryState``: a read-only snapshot of what only a running client knows.

The monitor and the status report read this instead of the client's internals:
connectivity, the last success and error, the send rate, whether a backlog is draining.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeliveryState:
    """What the running client's delivery parts know at one instant (wall times in epoch s)."""

    endpoint: str
    connectivity: str  # "up", "down" or "unknown"
    last_probe_at: float | None
    last_change_at: float | None
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    send_rate_per_s: float
    recovering: bool
    consecutive_failures: int
    last_reconciliation_at: float | None = None
    last_reconciliation: dict[str, object] | None = None  # what its last run did
