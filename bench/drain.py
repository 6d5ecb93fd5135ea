"""Drain: how fast a client ships a backlog found on disk, and what new records wait meanwhile.

    python bench/drain.py [--records 100000] [--postgres] [--live-rate 20] [--repeat 3]
    python bench/drain.py --records 1000000 --repeat 1   # the big run (peak RSS target)

1. A buffer file with ``--records`` pending records is built quickly (``log_predictions``
   in bulk, client never started; the records are stamped a day old).
2. Peer, the practical ceiling: ``bench/raw_ingest_app.py`` (FastAPI + one executemany
   INSERT OR IGNORE into SQLite) under uvicorn, fed by a plain httpx loop that reads the
   same backlog from the buffer file and posts it in batches of the same size (512, the
   client's backfill batch) - no state kept, no gzip, no retries.
3. Diagnostic: the same plain loop against the real cloud, which separates the cloud's
   cost from the edge client's.
4. edgebuf: the real cloud (``python -m cloud``, SQLite or ``--postgres``) and, in a
   separate process, a client opened on a copy of the buffer and started; it logs
   ``--live-rate`` new records/s while it drains. The child reports when the last backlog
   row was acknowledged and its own peak RSS (VmHWM) and CPU time; the latency of the
   records logged during the drain is read back from the cloud (``received_at`` minus the
   record's ``timestamp``, via ``GET /predictions``) and from the buffer (``sent_at`` minus
   ``buffered_at``).

Targets: drain >= 80% of the raw ceiling and >= 20,000 records/s on SQLite; peak RSS of
the edge process < 150 MB at 1M records; new records delivered within about one batch
timeout (10 s) during the drain.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import benchlib as bl
import httpx

from cloud.testing import CloudServer, free_port
from edgebuf import EnhancedAsyncLoggingClient

DEVICE = "bench-drain"
MODEL = "yolov8n-factory-1"
HERE = Path(__file__).resolve().parent
BATCH_TIMEOUT = 10.0  # the client's default, which the latency target refers to
MB = 1024 * 1024


# ---------------------------------------------------------------------- the backlog
def build_backlog(path: Path, n: int, chunk: int = 5_000) -> dict[str, Any]:
    """Commit ``n`` records, a day old, with the client never started."""
    client = EnhancedAsyncLoggingClient(f"http://127.0.0.1:{free_port()}", path, DEVICE)
    preds = bl.predictions(1_000, seed=2)
    base_ts = time.time() - 86_400
    t0 = time.perf_counter()
    try:
        for start in range(0, n, chunk):
            client.log_predictions(
                [
                    {
                        "prediction": preds[i % len(preds)],
                        "image_id": f"backlog-{i:08d}",
                        "model_version": MODEL,
                        "timestamp": base_ts + i * 0.01,
                    }
                    for i in range(start, min(n, start + chunk))
                ]
            )
    finally:
        client.close()
    seconds = time.perf_counter() - t0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as ro:
        last_id, count = ro.execute("SELECT max(id), count(*) FROM prediction_buffer").fetchone()
    return {
        "records": count,
        "last_id": last_id,
        "build_s": seconds,
        "build_records_per_s": count / seconds,
        "file_bytes": bl.file_bytes(path),
    }


# ---------------------------------------------------------------------- peers
def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"raw ingest app exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"raw ingest app not listening on {port} after {timeout:.0f} s")


@contextmanager
def raw_ingest_server(db: Path, log: Path):
    """``bench/raw_ingest_app.py`` under uvicorn on a free port; yields (url, pid)."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "raw_ingest_app.py"), "--port", str(port), "--db", str(db)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def cloud_server(database_url: str):
    server = CloudServer(database_url)
    try:
        server.start()
        yield server
    finally:
        server.close()


def plain_loop(buffer: Path, url: str, batch: int, server_pid: int) -> dict[str, Any]:
    """Read the backlog oldest-first and POST it in ``batch``-record requests, nothing else."""
    ro = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)
    sql = (
        "SELECT id, record_id, seq, image_id, timestamp, model_version, prediction_data"
        " FROM prediction_buffer WHERE id > ? ORDER BY id LIMIT ?"
    )
    sent = requests = body_bytes = 0
    last = 0
    cpu_server0 = bl.cpu_seconds(server_pid)
    cpu0 = time.process_time()
    with httpx.Client(
        base_url=url, timeout=120, headers={"Content-Type": "application/json"}
    ) as http:
        t0 = time.perf_counter()
        while True:
            rows = ro.execute(sql, (last, batch)).fetchall()
            if not rows:
                break
            records = ",".join(
                json.dumps(
                    {
                        "record_id": r[1],
                        "seq": r[2],
                        "image_id": r[3],
                        "timestamp": r[4],
                        "model_version": r[5],
                    },
                    separators=(",", ":"),
                )[:-1]
                + ',"prediction":'
                + r[6]
                + "}"
                for r in rows
            )
            body = (
                f'{{"device_id":"{DEVICE}","batch_id":"{uuid.uuid4().hex}","records":[{records}]}}'
            ).encode()
            answer = http.post("/log", content=body)
            answer.raise_for_status()
            sent += len(rows)
            requests += 1
            body_bytes += len(body)
            last = rows[-1][0]
        seconds = time.perf_counter() - t0
    ro.close()
    return {
        "records": sent,
        "seconds": seconds,
        "records_per_s": sent / seconds,
        "requests": requests,
        "body_bytes": body_bytes,
        "edge_cpu_s": time.process_time() - cpu0,
        "server_cpu_s": bl.cpu_seconds(server_pid) - cpu_server0,
    }


# ---------------------------------------------------------------------- edgebuf
def edgebuf_drain(
    buffer: Path,
    server: CloudServer,
    backlog: dict[str, Any],
    tmp: Path,
    live_rate: float,
    timeout: float,
) -> dict[str, Any]:
    """Drain ``buffer`` with a client in a child process; read back what it delivered."""
    out = tmp / "child.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--db",
        str(buffer),
        "--endpoint",
        server.url,
        "--backlog-last-id",
        str(backlog["last_id"]),
        "--live-rate",
        str(live_rate),
        "--child-timeout",
        str(timeout),
        "--out",
        str(out),
    ]
    assert server.process is not None
    cpu_server0 = bl.cpu_seconds(server.process.pid)
    with open(tmp / "child.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        rc = proc.wait(timeout=timeout + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0 or not out.exists():
        raise RuntimeError(f"drain child failed ({rc}):\n{(tmp / 'child.log').read_text()[-4000:]}")
    child = json.loads(out.read_text())
    child["server_cpu_s"] = bl.cpu_seconds(server.process.pid) - cpu_server0
    child["records_per_s"] = backlog["records"] / child["drain_s"]

    # Records logged while the drain ran: how long until the cloud had them.
    during = child["drained_wall"]
    with sqlite3.connect(f"file:{buffer}?mode=ro", uri=True) as ro:
        edge_waits = sorted(
            sent - buffered
            for buffered, sent in ro.execute(
                "SELECT buffered_at, sent_at FROM prediction_buffer WHERE id > ?"
                " AND buffered_at <= ? AND sent_at IS NOT NULL",
                (backlog["last_id"], during),
            )
        )
    cloud_waits = sorted(
        item["received_at"] - item["timestamp"]
        for item in fetch_predictions(server.url, since=child["started_wall"] - 1.0)
        if item["timestamp"] <= during
    )
    child["live_during_drain"] = len(cloud_waits)
    for name, waits in (("cloud", cloud_waits), ("edge", edge_waits)):
        child[f"{name}_latency_p50_s"] = bl.percentile(waits, 50)
        child[f"{name}_latency_p99_s"] = bl.percentile(waits, 99)
        child[f"{name}_latency_max_s"] = waits[-1] if waits else float("nan")
    stats = httpx.get(f"{server.url}/stats", params={"device_id": DEVICE}, timeout=60).json()
    child["cloud_stored"] = stats["total_records"]
    child["expected"] = backlog["records"] + child["live_logged"]
    return child


def fetch_predictions(url: str, since: float) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=url, timeout=120) as http:
        while True:
            params: dict[str, Any] = {"device_id": DEVICE, "since": since, "limit": 10_000}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/predictions", params=params)
            page.raise_for_status()
            data = page.json()
            items += data["items"]
            cursor = data["next_cursor"]
            if not cursor:
                return items


def child_main(args: argparse.Namespace) -> None:
    """In the child process: open, start, log live records, report when the backlog is gone."""
    t_open = time.perf_counter()
    client = EnhancedAsyncLoggingClient(args.endpoint, args.db, DEVICE)
    open_s = time.perf_counter() - t_open
    ro = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    remaining = (
        "SELECT EXISTS (SELECT 1 FROM prediction_buffer"
        " WHERE status IN ('pending', 'sending') AND id <= ?)"
    )
    preds = bl.predictions(100, seed=3)
    live = 0
    interval = 1.0 / args.live_rate if args.live_rate > 0 else None
    started_wall = time.time()
    t0 = time.perf_counter()
    client.start()
    next_log = next_poll = t0
    deadline = t0 + args.child_timeout
    drained = None
    while True:
        now = time.perf_counter()
        if interval is not None and now >= next_log:
            client.log_prediction(
                preds[live % len(preds)], image_id=f"live-{live:06d}", model_version=MODEL
            )
            live += 1
            next_log += interval
        if now >= next_poll:
            if not ro.execute(remaining, (args.backlog_last_id,)).fetchone()[0]:
                drained = time.perf_counter() - t0
                break
            next_poll = now + 0.05
        if now >= deadline:
            break
        wake = min(next_poll, next_log) if interval is not None else next_poll
        time.sleep(max(0.0, wake - time.perf_counter()))
    drained_wall = time.time()
    flushed = client.flush(timeout=60)  # the live records of the last, partial batch
    client.close()
    ro.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(args.out).write_text(
        json.dumps(
            {
                "open_s": open_s,
                "drain_s": drained if drained is not None else float("nan"),
                "drained": drained is not None,
                "started_wall": started_wall,
                "drained_wall": drained_wall,
                "live_logged": live,
                "flushed": flushed,
                "peak_rss_bytes": bl.peak_rss_bytes(os.getpid()),
                "maxrss_bytes": usage.ru_maxrss * 1024,
                "edge_cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )


# ---------------------------------------------------------------------- main
def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--records", type=int, default=100_000, help="backlog size")
    p.add_argument(
        "--postgres",
        action="store_true",
        help="the real cloud on PostgreSQL (127.0.0.1:5432) instead of SQLite",
    )
    p.add_argument(
        "--live-rate",
        type=float,
        default=20.0,
        help="new records/s the client logs while it drains",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=512,
        help="records per request of the plain loops (the client's backfill batch)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each contender, interleaved (medians); 1 for the big run",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--backlog-last-id", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args)
        return
    if args.smoke:
        args.records, args.repeat = 2_000, 1
    use_pg = args.postgres
    if use_pg and not bl.postgres_reachable():
        if not args.smoke:
            sys.exit("PostgreSQL at 127.0.0.1:5432 is not reachable (needed by --postgres)")
        bl.note("[drain] PostgreSQL not reachable: --smoke falls back to SQLite")
        use_pg = False
    backend = "PostgreSQL" if use_pg else "SQLite"
    timeout = max(120.0, args.records / 1_000)  # a drain slower than 1,000/s is a failure

    with bl.scratch_dir() as tmp:
        backlog_path = tmp / "backlog.db"
        bl.note(f"[drain] building a backlog of {args.records:,} records")
        backlog = build_backlog(backlog_path, args.records)

        def cloud_url(stack: ExitStack, run: str) -> str:
            if use_pg:
                return stack.enter_context(bl.fresh_postgres_database())
            return bl.sqlite_url(tmp / f"cloud-{run}.db")

        raw_runs, plain_cloud_runs, edge_runs = [], [], []
        for rep in range(args.repeat):
            bl.note(f"[drain] {rep + 1}/{args.repeat}: plain loop -> raw FastAPI+SQLite")
            with raw_ingest_server(tmp / f"raw-{rep}.db", tmp / "raw.log") as (url, pid):
                raw_runs.append(plain_loop(backlog_path, url, args.batch, pid))

            bl.note(f"[drain] {rep + 1}/{args.repeat}: plain loop -> real cloud ({backend})")
            with ExitStack() as stack:
                server = stack.enter_context(cloud_server(cloud_url(stack, f"plain-{rep}")))
                assert server.process is not None
                plain_cloud_runs.append(
                    plain_loop(backlog_path, server.url, args.batch, server.process.pid)
                )

            bl.note(f"[drain] {rep + 1}/{args.repeat}: edgebuf client -> real cloud ({backend})")
            buffer = tmp / f"edge-{rep}.db"
            shutil.copyfile(backlog_path, buffer)
            with ExitStack() as stack:
                server = stack.enter_context(cloud_server(cloud_url(stack, f"edge-{rep}")))
                edge_runs.append(
                    edgebuf_drain(buffer, server, backlog, tmp, args.live_rate, timeout)
                )
            buffer.unlink()

    raw, plain_cloud, edge = (bl.median_of(r) for r in (raw_runs, plain_cloud_runs, edge_runs))
    n = backlog["records"]
    table = bl.Table(
        f"drain of a {n:,}-record backlog, batches of {args.batch}, cloud on {backend}"
        f" (medians of {args.repeat} run(s))",
        [
            "contender",
            "seconds",
            "records/s",
            "vs raw ceiling",
            "edge CPU s",
            "server CPU s",
            "peak RSS MB",
        ],
    )
    table.add(
        "plain loop -> raw FastAPI+SQLite (ceiling)",
        raw["seconds"],
        raw["records_per_s"],
        1.0,
        raw["edge_cpu_s"],
        raw["server_cpu_s"],
        None,
    )
    table.add(
        f"plain loop -> real cloud ({backend})",
        plain_cloud["seconds"],
        plain_cloud["records_per_s"],
        bl.ratio(plain_cloud["records_per_s"], raw["records_per_s"]),
        plain_cloud["edge_cpu_s"],
        plain_cloud["server_cpu_s"],
        None,
    )
    table.add(
        f"edgebuf client -> real cloud ({backend})",
        edge["drain_s"],
        edge["records_per_s"],
        bl.ratio(edge["records_per_s"], raw["records_per_s"]),
        edge["edge_cpu_s"],
        edge["server_cpu_s"],
        edge["peak_rss_bytes"] / MB,
    )

    live = bl.Table(
        f"records logged at {args.live_rate:g}/s during the drain",
        ["measure", "count", "p50 s", "p99 s", "max s"],
    )
    live.add(
        "cloud received_at - timestamp",
        edge["live_during_drain"],
        edge["cloud_latency_p50_s"],
        edge["cloud_latency_p99_s"],
        edge["cloud_latency_max_s"],
    )
    live.add(
        "edge sent_at - buffered_at",
        edge["live_during_drain"],
        edge["edge_latency_p50_s"],
        edge["edge_latency_p99_s"],
        edge["edge_latency_max_s"],
    )

    targets = bl.Table("targets", ["target", "measured", "limit", "ratio", "wanted", "result"])
    checks: list[dict[str, Any]] = []

    def check(
        label: str, mine: Any, limit: Any, wanted: str, ok: bool | None, show_ratio: bool = True
    ) -> None:
        r = bl.ratio(mine, limit) if show_ratio else None
        targets.add(label, mine, limit, r, wanted, bl.verdict(ok))
        checks.append(
            {
                "target": label,
                "measured": mine,
                "limit": limit,
                "ratio": r,
                "wanted": wanted,
                "pass": ok,
            }
        )

    rps = edge["records_per_s"]
    check(
        "drain records/s vs raw ceiling",
        rps,
        raw["records_per_s"],
        "≥ 0.8×",
        rps >= 0.8 * raw["records_per_s"],
    )
    check("drain records/s (SQLite)", rps, 20_000.0, "≥ 20,000", None if use_pg else rps >= 20_000)
    peak = edge["peak_rss_bytes"] / MB
    check(
        f"edge peak RSS MB at {n:,} records (target set for 1M)", peak, 150.0, "< 150", peak < 150
    )
    worst = edge["cloud_latency_max_s"]
    check(
        "max latency of records logged during the drain, s",
        worst,
        BATCH_TIMEOUT,
        "≈ ≤ batch timeout",
        None if worst != worst else worst <= BATCH_TIMEOUT * 1.2,
    )
    stored_ok = edge["cloud_stored"] == edge["expected"] and edge["drained"]
    check(
        "cloud stored every record exactly once",
        edge["cloud_stored"],
        edge["expected"],
        "= expected",
        stored_ok,
        show_ratio=False,
    )

    facts = bl.Table("notes", ["fact", "value"])
    facts.add(
        "backlog build (log_predictions, 5,000 per call), records/s", backlog["build_records_per_s"]
    )
    facts.add("backlog buffer file, MB", backlog["file_bytes"] / MB)
    facts.add("client open on the backlog (child), s", edge["open_s"])
    facts.add("plain loop request body, bytes/record (no gzip)", raw["body_bytes"] / n)
    facts.add("live records logged during the drain", edge["live_during_drain"])
    results = {
        "records": n,
        "backend": backend,
        "backlog": backlog,
        "raw_ceiling": raw,
        "plain_to_cloud": plain_cloud,
        "edgebuf": edge,
        "targets": checks,
        "runs": {"raw": raw_runs, "plain_to_cloud": plain_cloud_runs, "edgebuf": edge_runs},
    }
    bl.report("drain", [table, live, targets, facts], results, args.json)


if __name__ == "__main__":
    main()
