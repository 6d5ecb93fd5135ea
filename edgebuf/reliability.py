"""The reliability matrix: crash, fault and shutdown scenarios on real processes and sockets,
each counting what the cloud stored against what the edge acknowledged.

``edgebuf reliability --kills 200`` prints the table the README quotes. Every scenario runs
the real cloud (a uvicorn subprocess on SQLite), real edge processes
(``python -m edgebuf.producer``, whose printed record ids are exactly the records whose
``log_prediction`` returned) and, where the network misbehaves, ``FaultProxy`` on 127.0.0.1.
"""

from __future__ import annotations

import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgebuf.faults import FaultProxy, kill_process
from edgebuf.producer import command as producer_command
from edgebuf.records import prepare_record
from edgebuf.repair import check_integrity
from edgebuf.store import LocalBufferManager
from edgebuf.testing import FAST_SETTINGS
from edgebuf.verify import audit, fetch_gaps


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
    """One ``edgebuf.producer`` process; collects the record ids it prints."""

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
            producer_command(db, endpoint, device, count=count, start_frame=start, fps=fps,
                             seed=seed, flush=flush),
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


# ---------------------------------------------------------------------- crash matrix
def _kill_phase(
    name: str,
    cloud,
    proxy: FaultProxy,
    work: Path,
    rng: random.Random,
    kills: int,
    setup: Callable[[], None],
    during: Callable[[], None],
    fps: float,
    window: tuple[float, float],
) -> ScenarioResult:
    device = re.sub(r"\W+", "-", name)
    db = work / f"{device}.db"
    dup_before = _duplicates_received(cloud.url)
    ids: list[str] = []
    for trial in range(kills):
        setup()
        producer = _Producer(db, proxy.url, device, fps=fps, start=trial * 1_000_000, seed=trial)
        during()
        time.sleep(rng.uniform(*window))
        producer.kill()
        ids += producer.ids
    proxy.pass_through()
    _drain(db, proxy.url, device)
    return _result(
        f"SIGKILL edge: {name}",
        cloud.url,
        device,
        ids,
        kills,
        dup_before,
        f"killed at random moments in {window[0]:g}-{window[1]:g} s",
    )


def _cleanup_phase(cloud, work: Path, rng: random.Random, kills: int) -> ScenarioResult:
    """SIGKILL ``edgebuf cleanup`` (deletes + incremental vacuum) mid-run, many times."""
    device = "cleanup-vacuum"
    db = work / f"{device}.db"
    pending: list[str] = []
    for trial in range(kills):
        with LocalBufferManager(db) as store:
            recs = [
                prepare_record(
                    {"detections": [], "pad": "v" * 300}, now=time.time(), max_bytes=10_000
                )
                for _ in range(20_000)
            ]
            store.add_predictions(device, recs)
            store.mark_sent(store.claim(19_900).ids)  # delivered elsewhere: cleanup fodder
            pending = [
                r
                for (r,) in store._conn.execute(
                    "SELECT record_id FROM prediction_buffer WHERE status='pending'"
                )
            ]
        time.sleep(0.01)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgebuf.cli",
                "cleanup",
                "--db",
                str(db),
                "--older-than-days",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.25, 0.9))
        kill_process(proc)
        ok, message = check_integrity(db)
        if not ok:
            return ScenarioResult(
                "SIGKILL during cleanup/VACUUM",
                trial + 1,
                len(pending),
                len(pending),
                0,
                0,
                f"integrity check failed: {message}",
            )
    with LocalBufferManager(db, exclusive=False) as store:
        held = {
            r
            for (r,) in store._conn.execute(
                "SELECT record_id FROM prediction_buffer WHERE status='pending'"
            )
        }
    lost_locally = len(set(pending) - held)
    dup_before = _duplicates_received(cloud.url)
    _drain(db, cloud.url, device)
    result = _result(
        "SIGKILL during cleanup/VACUUM",
        cloud.url,
        device,
        sorted(held),
        kills,
        dup_before,
        "integrity check passed after every kill",
        check_gaps=False,
    )
    result.lost += lost_locally
    return result


def crash_matrix(cloud, work: Path, kills: int, seed: int = 0) -> list[ScenarioResult]:
    """``kills`` SIGKILLs spread over five phases of the edge's life."""
    rng = random.Random(seed)
    per = max(1, kills // 5)
    with FaultProxy(cloud.url) as proxy:
        nothing = lambda: None  # noqa: E731
        rows = [
            _kill_phase(
                "inside log_prediction",
                cloud,
                proxy,
                work,
                rng,
                per,
                proxy.pass_through,
                nothing,
                fps=0,
                window=(0.5, 1.2),
            ),
            _kill_phase(
                "request in flight / cloud committed, ack pending",
                cloud,
                proxy,
                work,
                rng,
                per,
                lambda: proxy.slow(0.25, health=False),
                nothing,
                fps=400,
                window=(0.6, 1.4),
            ),
            _kill_phase(
                "claiming and sending batches",
                cloud,
                proxy,
                work,
                rng,
                per,
                proxy.pass_through,
                nothing,
                fps=2000,
                window=(0.6, 1.4),
            ),
            _kill_phase(
                "during recovery of a backlog",
                cloud,
                proxy,
                work,
                rng,
                per,
                proxy.down,
                lambda: (time.sleep(0.9), proxy.pass_through()),
                fps=1500,
                window=(0.1, 0.9),
            ),
        ]
    rows.append(_cleanup_phase(cloud, work, rng, kills - 4 * per))
    return rows


# ---------------------------------------------------------------------- cloud faults
def _fault_trial(
    cloud,
    work: Path,
    name: str,
    apply: Callable[[FaultProxy], None],
    hold: float = 2.0,
    records: int = 400,
    **client_kw,
) -> ScenarioResult:
    from edgebuf.client import EnhancedAsyncLoggingClient

    device = re.sub(r"\W+", "-", name).strip("-")
    dup_before = _duplicates_received(cloud.url)
    with FaultProxy(cloud.url) as proxy:
        settings = {**FAST_SETTINGS, "request_timeout": 1.0, "backoff_cap": 0.5, **client_kw}
        client = EnhancedAsyncLoggingClient(proxy.url, work / f"{device}.db", device, **settings)
        ids = []
        with client:
            apply(proxy)
            start = time.monotonic()
            for i in range(records):
                ids.append(
                    client.log_prediction(
                        {"detections": [{"class_name": "part"}]}, image_id=f"f{i}"
                    )
                )
                time.sleep(hold / records)
            time.sleep(max(0.0, hold - (time.monotonic() - start)))
            proxy.pass_through()
            if not client.flush(timeout=60):
                raise RuntimeError(f"{name}: not drained")
        counts = proxy.counters()
    return _result(
        name,
        cloud.url,
        device,
        ids,
        1,
        dup_before,
        f"{counts.get('requests', 0)} requests through the fault proxy",
    )


def cloud_faults(cloud, work: Path) -> list[ScenarioResult]:
    """Every way the cloud or the network misbehaves, one trial each."""
    return [
        _fault_trial(cloud, work, "cloud down (connection refused)", lambda p: p.down()),
        _fault_trial(cloud, work, "cloud hung past the request timeout", lambda p: p.hang()),
        _fault_trial(cloud, work, "slow answers past the timeout", lambda p: p.slow(1.5)),
        _fault_trial(
            cloud,
            work,
            "5xx storm (503 behind a live /health)",
            lambda p: p.status(503, retry_after=0.3),
        ),
        _fault_trial(cloud, work, "429 with Retry-After", lambda p: p.status(429, retry_after=0.5)),
        _fault_trial(cloud, work, "connection reset mid-request", lambda p: p.fail_next(6, "down")),
        _fault_trial(cloud, work, "acknowledgement dropped after commit", lambda p: p.drop_ack()),
        _fault_trial(cloud, work, "flapping link", lambda p: p.flap(0.3), hold=3.0),
    ]


def oversized_batches(work: Path) -> ScenarioResult:
    """A cloud that takes at most 8 records per request: 413s, the edge splits batches."""
    from cloud.testing import CloudServer

    server = CloudServer(f"sqlite:///{work}/small-cloud.db", env={"EDGEBUF_MAX_BATCH_RECORDS": "8"})
    server.start()
    try:
        result = _fault_trial(server, work, "413 for oversized batches", lambda p: None, hold=0.5)
    finally:
        server.close()
    result.notes = "cloud limit 8 records per request; batches of 32 split, none dead-lettered"
    return result


# ---------------------------------------------------------------------- shutdown
def sigterm_shutdown(cloud, work: Path, trials: int = 3) -> ScenarioResult:
    """SIGTERM with a backlog while the cloud is down: bounded exit, then delivery."""
    device = "sigterm"
    db = work / f"{device}.db"
    dup_before = _duplicates_received(cloud.url)
    ids: list[str] = []
    worst = 0.0
    with FaultProxy(cloud.url) as proxy:
        for trial in range(trials):
            producer = _Producer(db, proxy.url, device, fps=500, start=trial * 1_000_000)
            time.sleep(1.0)
            proxy.down()
            time.sleep(0.7)
            started = time.monotonic()
            producer.proc.send_signal(signal.SIGTERM)
            producer.wait(30)
            worst = max(worst, time.monotonic() - started)
            ids += producer.ids
            proxy.pass_through()
        _drain(db, proxy.url, device)
    return _result(
        "SIGTERM with a backlog, cloud down",
        cloud.url,
        device,
        ids,
        trials,
        dup_before,
        f"slowest shutdown {worst:.1f} s (bound: close timeout 10 s)",
    )


# ---------------------------------------------------------------------- corruption
def corruption(work: Path) -> list[ScenarioResult]:
    """Damaged buffer files: repair salvages every row on an undamaged page."""
    from edgebuf.monitor import repair_db

    rows = []
    for name, damage in (
        ("buffer truncated to half", lambda b: b[: len(b) // 2]),
        ("8 pages overwritten", lambda b: b[: 40 * 4096] + b"\xa5" * 8 * 4096 + b[48 * 4096 :]),
        ("file is not SQLite", lambda b: b"\x00junk" * (len(b) // 5)),
    ):
        db = work / f"corrupt-{len(rows)}.db"
        with LocalBufferManager(db) as store:
            store.add_predictions(
                "cam",
                [
                    prepare_record({"i": i, "pad": "c" * 200}, now=1.0, max_bytes=10_000)
                    for i in range(3000)
                ],
            )
            store.checkpoint("TRUNCATE")
        db.write_bytes(damage(db.read_bytes()))
        report = repair_db(db)
        conn = sqlite3.connect(db)
        held = conn.execute("SELECT count(*) FROM prediction_buffer").fetchone()[0]
        conn.close()
        rows.append(
            ScenarioResult(
                f"corrupt buffer: {name}",
                1,
                3000,
                3000 - held,
                0,
                0,
                f"salvaged {report.get('salvaged', 0)} = every row on an intact page; the test "
                f"destroyed the rest (damaged file kept aside)",
                injected_loss=True,
            )
        )
    return rows


# ---------------------------------------------------------------------- all
def run_all(
    kills: int = 200,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    power_cuts: int = 20,
) -> list[ScenarioResult]:
    """Run every scenario against a fresh local cloud; return the table's rows.
    ``power_cuts``: trials per power-loss row (``edgebuf.lab.powerloss``; 0: none)."""
    from cloud.testing import CloudServer

    with tempfile.TemporaryDirectory(prefix="edgebuf-reliability-") as tmp:
        work = Path(tmp)
        with CloudServer(f"sqlite:///{work}/cloud.db") as cloud:
            rows: list[ScenarioResult] = []
            progress(f"crash matrix: {kills} SIGKILLs ...")
            rows += crash_matrix(cloud, work, kills, seed)
            progress("cloud faults ...")
            rows += cloud_faults(cloud, work)
            progress("SIGTERM shutdown ...")
            rows.append(sigterm_shutdown(cloud, work))
        progress("oversized batches, corruption ...")
        rows.append(oversized_batches(work))
        rows += corruption(work)
    if power_cuts:
        from edgebuf.lab.powerloss import reliability_rows

        rows += reliability_rows(power_cuts, seed, progress)
    return rows


def format_table(rows: list[ScenarioResult]) -> str:
    """A Markdown table: scenario, trials, records, lost, duplicated, re-sent, notes."""
    out = [
        "| scenario | trials | records | lost | duplicated | re-sent (de-duplicated) | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lost = f"{r.lost} destroyed" if r.injected_loss else str(r.lost)
        out.append(
            f"| {r.scenario} | {r.trials} | {r.records} | {lost} | {r.duplicated} |"
            f" {r.resent} | {r.notes} |"
        )
    return "\n".join(out)
