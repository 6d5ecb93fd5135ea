"""What every reliability scenario shares: its result row, the camera process it kills,
draining a buffer and counting what the cloud stored."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgebuf.lab.faults import kill_process
from edgebuf.lab.producer import command as producer_command
from edgebuf.lab.verify import audit, fetch_gaps


@dataclass
class ScenarioResult:
    """One row of the reliability table."""

    scenario: str
    trials: int
    records: int
    lost: int
    duplicated: int
    resent: int  # duplicate deliveries the cloud received and discarded (not stored twice)
    notes: str = ""
    injected_loss: bool = False  # the scenario itself destroys data (corruption): not edgebuf's

    @property
    def ok(self) -> bool:
        return (self.lost == 0 or self.injected_loss) and self.duplicated == 0


def _duplicates_received(endpoint: str) -> int:
    text = httpx.get(f"{endpoint}/metrics", timeout=10).text
    return int(
        sum(
            float(v)
            for v in re.findall(
                r"^edgebuf_cloud_records_duplicate_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M
            )
        )
    )


class _Producer:
    """One ``edgebuf.lab.producer`` process; collects the record ids it prints."""

    def __init__(
        self,
        db: Path,
        endpoint: str,
        device: str,
        *,
        fps: float,
        start: int,
        count: int = 1_000_000,
        flush: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.ids: list[str] = []
        self.proc = subprocess.Popen(
            producer_command(
                db,
                endpoint,
                device,
                count=count,
                start_frame=start,
                fps=fps,
                seed=seed,
                flush=flush,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if len(line) == 33:
                self.ids.append(line[:32])

    def wait_started(self, timeout: float) -> None:
        """Return once the camera logged its first record (or ended, or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while not self.ids and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill(self) -> None:
        kill_process(self.proc)
        self._reader.join(5)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        return code


def _drain(db: Path, endpoint: str, device: str, timeout: float = 120.0) -> None:
    final = _Producer(db, endpoint, device, fps=0, start=0, count=0, flush=timeout)
    if final.wait(timeout + 30) != 0:
        raise RuntimeError(f"{device}: backlog did not drain: {final.proc.stderr.read()[-400:]}")


def _result(
    name: str,
    endpoint: str,
    device: str,
    ids: Iterable[str],
    trials: int,
    dup_before: int,
    notes: str,
    check_gaps: bool = True,
) -> ScenarioResult:
    ids = list(ids)
    a = audit(endpoint, device, ids)
    gaps = fetch_gaps(endpoint, device)["gaps"] if check_gaps else []
    lost = len(a.lost)
    if gaps:
        notes += f"; sequence gaps {gaps[:3]}"
    return ScenarioResult(
        name,
        trials,
        len(ids),
        lost,
        sum(n - 1 for n in a.duplicated.values()),
        _duplicates_received(endpoint) - dup_before,
        notes,
    )
