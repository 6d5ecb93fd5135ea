"""The transport seam: what the sender and the connectivity monitor need from the network.

The sender talks to a one-method-per-verb interface (``send`` a batch body, ``probe``
health) and gets plain ``SendResult`` values back, so tests and simulations can script a
transport. The real one, over httpx, is ``edgebuf.delivery.http.HttpTransport``.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Protocol

# ``SendResult.refused``: what the cloud's own error body says it refused. Only a body that
# the cloud identifies as its own (``"service": "edgebuf-cloud"``) sets it.
REFUSED_RECORD = "record"  # the records' content (schema, JSON): bisect and dead-letter
REFUSED_BATCH = "batch"  # the batch's size: split it


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one ``POST /log`` attempt came to. ``status`` is None for network errors.

    A 2xx is the cloud's acknowledgement only with ``accepted`` and ``duplicates`` set (and
    ``batch_id`` naming the batch sent, when the transport reads it); any other 2xx (a
    captive portal's page) is a retryable fault. ``refused`` is set only from the cloud's
    own error body; ``fault`` names a transport fault kind (``edgebuf.delivery.state``).
    """

    status: int | None
    retry_after: float | None = None
    error: str | None = None
    accepted: int | None = None
    duplicates: int | None = None
    batch_id: str | None = None
    refused: str | None = None
    fault: str | None = None


class Transport(Protocol):
    """What the sender and the connectivity monitor need from the network."""

    def send(self, body: bytes) -> SendResult:
        """POST one JSON batch body to the cloud's ``/log``."""

    def probe(self) -> bool:
        """Probe ``/health``: True when the cloud answers 2xx."""

    def close(self) -> None:
        """Release connections."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
