"""Read back what the cloud stored, to prove delivery instead of assuming it.

Used by drills, notebooks and tests: every record id the edge logged must be stored
exactly once, and the per-device sequence must have no gaps that the edge did not
account for (``dropped_records``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import httpx


def fetch_predictions(
    endpoint: str, device_id: str, *, page: int = 10_000, timeout: float = 30.0
) -> list[dict]:
    """Every stored prediction of ``device_id``, following ``GET /predictions`` cursors."""
    items: list[dict] = []
    cursor = None
    with httpx.Client(base_url=endpoint, timeout=timeout) as http:
        while True:
            params: dict = {"device_id": device_id, "limit": page}
            if cursor:
                params["cursor"] = cursor
            resp = http.get("/predictions", params=params)
            resp.raise_for_status()
            data = resp.json()
            items.extend(data["items"])
            cursor = data.get("next_cursor")
            if not cursor:
                return items


def fetch_gaps(endpoint: str, device_id: str, timeout: float = 30.0) -> dict:
    """``GET /devices/{id}/gaps``; an unknown device means nothing arrived."""
    resp = httpx.get(f"{endpoint}/devices/{device_id}/gaps", timeout=timeout)
    if resp.status_code == 404:
        return {"device_id": device_id, "count": 0, "missing": 0, "gaps": []}
    resp.raise_for_status()
    return resp.json()


@dataclass
class DeliveryAudit:
    """Logged vs stored, per record id: the numbers a drill must show as zero."""

    logged: int
    stored: int
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0  # stored ids the caller did not list (e.g. committed just before a kill)
    gaps: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated


def audit(endpoint: str, device_id: str, logged_ids: list[str] | set[str]) -> DeliveryAudit:
    """Compare the record ids the edge returned from ``log_prediction`` with the cloud."""
    items = fetch_predictions(endpoint, device_id)
    counts = collections.Counter(item["record_id"] for item in items)
    logged = set(logged_ids)
    return DeliveryAudit(
        logged=len(logged),
        stored=len(items),
        lost=sorted(logged - set(counts)),
        duplicated={rid: n for rid, n in counts.items() if n > 1},
        unexpected=len(set(counts) - logged),
        gaps=fetch_gaps(endpoint, device_id).get("gaps", []),
    )


def fetch_stats(endpoint: str, device_id: str | None = None, timeout: float = 30.0) -> dict:
    """``GET /stats`` (totals, per-device figures, model versions, detections per class)."""
    params = {"device_id": device_id} if device_id else None
    resp = httpx.get(f"{endpoint}/stats", params=params, timeout=timeout)
    resp.raise_for_status()
    return resp.json()
