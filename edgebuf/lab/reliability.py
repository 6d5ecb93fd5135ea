"""The reliability matrix: crash, fault and shutdown scenarios on real processes and sockets,
each counting what the cloud stored against what the edge acknowledged.

``edgebuf reliability --kills 200`` prints the table the README quotes. Every scenario runs
the real cloud (a uvicorn subprocess on SQLite), real edge processes
(``python -m edgebuf.lab.producer``, whose printed record ids are exactly the records whose
``log_prediction`` returned) and, where the network misbehaves, ``FaultProxy`` on 127.0.0.1.
"""

from __future__ import annotations

import re
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgebuf.lab.crashes import crash_matrix
from edgebuf.lab.faults import FaultProxy
from edgebuf.lab.scenario import ScenarioResult, _drain, _duplicates_received, _Producer, _result
from edgebuf.lab.testing import FAST_SETTINGS
from edgebuf.records import prepare_record
from edgebuf.store import LocalBufferManager

__all__ = ["ScenarioResult", "crash_matrix", "format_table", "run_all"]


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
    from edgebuf.store.repair import repair_db

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
        with LocalBufferManager(db, exclusive=False) as salvaged:
            held = sum(salvaged.counts().values())
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
        from edgebuf.lab.powerreport import reliability_rows

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
