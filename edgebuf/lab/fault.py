"""``Fault``: one misbehaviour of the fault proxy, as a value (mode and parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DOWN", "MODES", "PASS", "Fault"]

MODES = ("pass", "down", "hang", "status", "slow", "drop_ack", "flap")


@dataclass(frozen=True)
class Fault:
    """One fault mode of the proxy.

    ``kind`` is one of ``pass`` (forward), ``down`` (connections refused or reset),
    ``hang`` (accept, never answer), ``status`` (answer ``code`` with an optional
    ``Retry-After``, nothing forwarded), ``slow`` (forward, answer after ``seconds``),
    ``drop_ack`` (forward, so the cloud commits, then close without answering) and
    ``flap`` (down and pass alternating every ``period`` seconds).

    ``as_cloud`` (status faults): the answer's body is in the cloud's own words, a refusal of
    the records (``"service": "edgebuf-cloud", "refused": "record"``), which the edge takes as
    evidence that the records are at fault; without it the answer is a proxy's, which the
    edge retries.

    ``health`` says whether requests other than ``POST /log`` (the ``/health`` probe)
    suffer the fault too. Link faults (down, hang, slow, flap) hit everything by default;
    service faults (status, drop_ack) hit only ``/log`` by default, so a 5xx storm happens
    behind a live ``/health``, as with a database outage behind a healthy API.
    """

    kind: str = "pass"
    code: int | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    period: float = 0.0
    health: bool = True
    as_cloud: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODES:
            raise ValueError(f"unknown fault mode {self.kind!r}; one of {', '.join(MODES)}")
        if self.kind == "status" and not (self.code and 100 <= self.code <= 599):
            raise ValueError("a status fault needs an HTTP code")
        if self.kind == "flap" and self.period <= 0:
            raise ValueError("a flap fault needs period > 0")

    @classmethod
    def make(cls, kind: str | Fault | int, **params: Any) -> Fault:
        """Build a fault from a mode name (``"drop_ack"``), an HTTP code (``429``) or a Fault.

        Without an explicit ``health``, service faults (status, drop_ack) spare ``/health``.
        """
        if isinstance(kind, Fault):
            return kind
        if isinstance(kind, int):
            params["code"], kind = kind, "status"
        params.setdefault("health", kind not in ("status", "drop_ack"))
        return cls(kind, **params)

    @property
    def name(self) -> str:
        """A short label, e.g. ``status:429`` or ``slow:1.5s``."""
        if self.kind == "status":
            return f"status:{self.code}"
        if self.kind == "slow":
            return f"slow:{self.seconds:g}s"
        if self.kind == "flap":
            return f"flap:{self.period:g}s"
        return self.kind

    def applies_to(self, method: str, path: str) -> bool:
        """Whether a request to ``path`` suffers this fault (see ``health``)."""
        if self.kind == "pass":
            return False
        is_log = method == "POST" and path.split("?", 1)[0].rstrip("/") == "/log"
        return is_log or self.health


PASS = Fault("pass")
DOWN = Fault("down")
