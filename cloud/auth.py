"""Bearer-token authorization: who may write or read which device's records.

Two kinds of keys (see `CloudSettings`): API keys act for every device; a device key acts
only for its own device_id, so a leaked camera key cannot forge or read another camera's
records. With no key configured at all the service is open (embedded local mode).

Failing authorization never stores anything: `/log` checks the header before reading
the body, and the device scope right after parsing it, before any database work.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from cloud.settings import CloudSettings

__all__ = ["Authenticator", "Principal"]


@dataclass(frozen=True)
class Principal:
    """The caller: `device_id` None means it may act for every device."""

    device_id: str | None

    def require_device(self, device_id: str | None) -> None:
        """Refuse (403) a device-scoped caller acting for another device, or for all."""
        if self.device_id is not None and device_id != self.device_id:
            raise HTTPException(
                403, f"this key may only act for device {self.device_id!r}"
            )


_ANYONE = Principal(device_id=None)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    """Check `Authorization: Bearer <key>` against the configured keys."""

    def __init__(self, settings: CloudSettings) -> None:
        # Keys are indexed by their SHA-256 so a fleet of thousands of device keys costs
        # one dict lookup per request. The lookup's timing can only reveal something about
        # the digest of a guess, never about a key; the final check is compare_digest.
        self._by_digest: dict[bytes, tuple[bytes, Principal]] = {}
        for device_id, key in settings.device_keys.items():
            self._by_digest[_digest(key)] = (key.encode(), Principal(device_id))
        for key in settings.api_keys:  # an API key wins if a device shares the same key
            self._by_digest[_digest(key)] = (key.encode(), _ANYONE)
        self.enabled = bool(self._by_digest)

    def principal_for(self, token: str) -> Principal | None:
        """Return who `token` belongs to, or None when it matches no key."""
        entry = self._by_digest.get(_digest(token))
        if entry is None:
            return None
        key, principal = entry
        return principal if hmac.compare_digest(token.encode(), key) else None

    def authenticate(self, request: Request) -> Principal:
        """Return the caller of `request`, or raise 401 when a key is required and wrong."""
        if not self.enabled:
            return _ANYONE
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        principal = self.principal_for(token.strip())
        if principal is None:
            raise HTTPException(
                401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        return principal

    async def __call__(self, request: Request) -> Principal:
        # async so FastAPI runs it on the event loop, not in a worker thread.
        return self.authenticate(request)
