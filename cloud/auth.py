"""Bearer-token authorization: who may write or read which device's records.

Two kinds of keys (see `CloudSettings`): API keys act for every device; a device key acts
only for its own device_id, so a leaked camera key cannot forge or read another camera's
records. With no key configured at all the service is open (embedded local mode).

Failing authorization never stores anything: `/log` checks the header before reading
the body, and the device scope right after parsing it, before any database work.

Client certificates (`cert_device_binding`): TLS ends at a reverse proxy, which verifies
the device's certificate and passes `X-Client-Verify` (`SUCCESS`) and `X-Client-Subject`
(the verified subject DN, e.g. `CN=cam-01,O=factory`) on. Those headers are believed only
from a `trusted_proxies` address; then the caller acts only for the device named by the
certificate's CN, and a key scoped to another device is refused (403).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass

from fastapi import HTTPException, Request

from cloud.settings import CloudSettings

__all__ = ["Authenticator", "CertificateBinding", "Principal", "subject_cn"]

VERIFY_HEADER = "x-client-verify"  # nginx: $ssl_client_verify
SUBJECT_HEADER = "x-client-subject"  # nginx: $ssl_client_s_dn (RFC 2253)


@dataclass(frozen=True)
class Principal:
    """The caller: `device_id` None means it may act for every device."""

    device_id: str | None
    via: str = "key"  # what scoped it: "key" or "client certificate"

    def require_device(self, device_id: str | None) -> None:
        """Refuse (403) a device-scoped caller acting for another device, or for all."""
        if self.device_id is not None and device_id != self.device_id:
            raise HTTPException(403, f"this {self.via} may only act for device {self.device_id!r}")


_ANYONE = Principal(device_id=None)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


_RDN_SPLIT = re.compile(r"(?<!\\),")


def subject_cn(dn: str) -> str | None:
    """The CN of an RFC 2253 subject (`CN=cam-01,O=x`); None if it has none or several."""
    cns = [
        part.strip()[3:].replace("\\,", ",")
        for part in _RDN_SPLIT.split(dn)
        if part.strip()[:3].upper() == "CN="
    ]
    return cns[0] if len(cns) == 1 and cns[0] else None


class CertificateBinding:
    """The device of the client certificate a trusted proxy verified (see module doc)."""

    def __init__(self, settings: CloudSettings) -> None:
        self.enabled = settings.cert_device_binding
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def from_trusted_proxy(self, request: Request) -> bool:
        """Whether the TCP peer of `request` is a configured proxy."""
        if request.client is None:
            return False
        try:
            peer = ipaddress.ip_address(request.client.host)
        except ValueError:
            return False
        return any(peer in net for net in self._proxies)

    def device_of(self, request: Request) -> str | None:
        """The certificate's CN; None when binding is off, the peer is not a trusted proxy
        (its headers are then ignored) or the proxy verified no certificate. 403 when the
        proxy reports a failed verification or a subject without one CN."""
        if not self.enabled or not self.from_trusted_proxy(request):
            return None
        verify = request.headers.get(VERIFY_HEADER, "NONE")
        if verify == "NONE":
            return None
        if verify != "SUCCESS":
            raise HTTPException(403, f"client certificate not verified by the proxy: {verify}")
        device = subject_cn(request.headers.get(SUBJECT_HEADER, ""))
        if device is None:
            raise HTTPException(403, "the verified client certificate names no single CN")
        return device

    def bind(self, principal: Principal, request: Request) -> Principal:
        """Narrow `principal` to the certificate's device; 403 if its key is another's."""
        device = self.device_of(request)
        if device is None:
            return principal
        if principal.device_id is not None and principal.device_id != device:
            raise HTTPException(
                403,
                f"the key is for device {principal.device_id!r}, the client certificate"
                f" for {device!r}",
            )
        return Principal(device, via="client certificate")


class Authenticator:
    """Check `Authorization: Bearer <key>` against the configured keys, then bind the
    caller to its client certificate's device (`CertificateBinding`)."""

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
        self.certificates = CertificateBinding(settings)

    def principal_for(self, token: str) -> Principal | None:
        """Return who `token` belongs to, or None when it matches no key."""
        entry = self._by_digest.get(_digest(token))
        if entry is None:
            return None
        key, principal = entry
        return principal if hmac.compare_digest(token.encode(), key) else None

    def authenticate(self, request: Request) -> Principal:
        """Return the caller of `request`, or raise 401 when a key is required and wrong
        (403 when its client certificate is another device's)."""
        return self.certificates.bind(self._key_principal(request), request)

    def _key_principal(self, request: Request) -> Principal:
        if not self.enabled:
            return _ANYONE
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        principal = self.principal_for(token.strip())
        if principal is None:
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return principal

    async def __call__(self, request: Request) -> Principal:
        # async so FastAPI runs it on the event loop, not in a worker thread.
        return self.authenticate(request)
