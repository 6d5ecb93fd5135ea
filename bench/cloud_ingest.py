"""Cloud ingest: records/s and request latency of the real cloud service under many devices.

    python bench/cloud_ingest.py [--devices 16] [--seconds 10] [--batch 32] [--max-rate 60000]
                                 [--no-postgres]

Each configuration starts real ``python -m cloud`` processes on 127.0.0.1 and a fresh
database, then ``--devices`` threads, each a simulated device with its own httpx client
(keep-alive), post ``--batch``-record batches of unique records as fast as the service
answers, for ``--seconds`` after a warm-up second. Bodies are built before the clock
starts, so the load generator costs little CPU. Configurations:

- one replica on SQLite, gzip bodies (what the edge sends: gzip level 1);
- one replica on SQLite, plain bodies (the cost and the bytes of not compressing);
- one replica on PostgreSQL (127.0.0.1:5432, a fresh ``edgebuf_bench_<hex>`` database);
- two replicas on the same PostgreSQL database; each device alternates between them.

Reported: records/s, request latency p50/p99, bytes on the wire per record (request and
response, HTTP/1.1 headers included, TCP/IP framing not), the CPU the replicas used and
how busy the whole machine was. Target: two PostgreSQL replicas >= 1.5x one.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib as bl
import httpx

from cloud.testing import CloudServer

MODEL = "yolov8n-factory-1"


# ---------------------------------------------------------------------- bodies
def make_bodies(
    device: str, count: int, batch: int, texts: list[str], use_gzip: bool
) -> list[bytes]:
    """``count`` request bodies of ``batch`` unique records each, in the edge's wire format."""
    bodies = []
    seq = 0
    now = time.time()
    for _ in range(count):
        parts = []
        for _ in range(batch):
            seq += 1
            parts.append(
                f'{{"record_id":"{uuid.uuid4().hex}","seq":{seq},"image_id":"frame-{seq:08d}",'
                f'"timestamp":{now + seq * 0.033:.3f},"model_version":"{MODEL}",'
                f'"prediction":{texts[seq % len(texts)]}}}'
            )
        body = (
            f'{{"device_id":"{device}","batch_id":"{uuid.uuid4().hex}",'
            f'"records":[{",".join(parts)}]}}'
        ).encode()
        bodies.append(gzip.compress(body, compresslevel=1) if use_gzip else body)
    return bodies


# ---------------------------------------------------------------------- load
@dataclass
class DeviceResult:
    records: int = 0
    requests: int = 0
    errors: int = 0
    wire_bytes: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    ran_out: bool = False


def _head_bytes(headers: httpx.Headers) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.raw) + 2  # "k: v\r\n", blank line


def device_loop(
    urls: list[str],
    bodies: list[bytes],
    use_gzip: bool,
    batch: int,
    start: threading.Barrier,
    measure_from: list[float],
    stop_at: list[float],
    out: DeviceResult,
) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "edgebuf"}
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    with httpx.Client(headers=headers, timeout=60) as http:
        start.wait()
        clock = time.perf_counter
        for i, body in enumerate(bodies):
            url = urls[i % len(urls)]
            t0 = clock()
            if t0 >= stop_at[0]:
                return
            try:
                answer = http.post(url, content=body)
            except httpx.HTTPError:
                out.errors += 1
                continue
            t1 = clock()
            if answer.status_code != 200:
                out.errors += 1
                continue
            if t0 >= measure_from[0] and t1 <= stop_at[0]:
                out.records += batch
                out.requests += 1
                out.latencies_ns.append(int((t1 - t0) * 1e9))
                request_line = len(f"POST {httpx.URL(url).raw_path.decode()} HTTP/1.1\r\n")
                out.wire_bytes += (
                    request_line
                    + _head_bytes(answer.request.headers)
                    + len(body)
                    + len("HTTP/1.1 200 OK\r\n")
                    + _head_bytes(answer.headers)
                    + len(answer.content)
                )
        out.ran_out = True


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def postgres_cpu_seconds() -> float:
    """CPU seconds so far of every PostgreSQL process on this machine (server and backends)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() == "postgres":
                total += bl.cpu_seconds(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return total


def run_load(
    urls: list[str], pids: list[int], args: Any, use_gzip: bool, texts: list[str]
) -> dict[str, Any]:
    per_device = max(
        4, int(args.max_rate * (args.seconds + args.warmup) / args.devices / args.batch) + 1
    )
    bodies = [
        make_bodies(f"dev-{d:03d}-{uuid.uuid4().hex[:6]}", per_device, args.batch, texts, use_gzip)
        for d in range(args.devices)
    ]
    results = [DeviceResult() for _ in range(args.devices)]
    start = threading.Barrier(args.devices + 1)
    measure_from, stop_at = [float("inf")], [float("inf")]
    threads = [
        threading.Thread(
            target=device_loop,
            name=f"device-{d}",
            daemon=True,
            args=(
                [f"{u}/log" for u in rotate(urls, d)],
                bodies[d],
                use_gzip,
                args.batch,
                start,
                measure_from,
                stop_at,
                results[d],
            ),
        )
        for d in range(args.devices)
    ]
    for t in threads:
        t.start()
    now = time.perf_counter()
    measure_from[0] = now + args.warmup
    stop_at[0] = measure_from[0] + args.seconds
    start.wait()
    time.sleep(max(0.0, measure_from[0] - time.perf_counter()))
    cpu0 = [bl.cpu_seconds(p) for p in pids]
    pg0 = postgres_cpu_seconds()
    busy0, total0 = machine_busy()
    gen0 = time.process_time()
    time.sleep(max(0.0, stop_at[0] - time.perf_counter()))
    cpu1 = [bl.cpu_seconds(p) for p in pids]
    pg1 = postgres_cpu_seconds()
    busy1, total1 = machine_busy()
    gen1 = time.process_time()
    for t in threads:
        t.join(timeout=120)
    lat = sorted(x for r in results for x in r.latencies_ns)
    ncpu = os.cpu_count() or 1
    busy_cores = 100 * ncpu * (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
    server_pct = 100 * sum(b - a for a, b in zip(cpu0, cpu1)) / args.seconds
    pg_pct = 100 * (pg1 - pg0) / args.seconds
    gen_pct = 100 * (gen1 - gen0) / args.seconds
    records = sum(r.records for r in results)
    summary = bl.latency_summary(lat)
    return {
        "records": records,
        "records_per_s": records / args.seconds,
        "requests": sum(r.requests for r in results),
        "errors": sum(r.errors for r in results),
        "ran_out": any(r.ran_out for r in results),
        "p50_ms": summary["p50_us"] / 1e3,
        "p99_ms": summary["p99_us"] / 1e3,
        "wire_bytes_per_record": sum(r.wire_bytes for r in results) / records if records else None,
        "body_bytes_per_record": sum(len(b) for b in bodies[0]) / (len(bodies[0]) * args.batch),
        "server_cpu_pct": server_pct,
        "postgres_cpu_pct": pg_pct,
        "loadgen_cpu_pct": gen_pct,
        "machine_busy_pct": busy_cores,
        "others_cpu_pct": (
            busy_cores - server_pct - pg_pct - gen_pct if busy_cores is not None else None
        ),
    }


def rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


@contextlib.contextmanager
def replicas(database_url: str, count: int) -> Iterator[list[CloudServer]]:
    servers = [CloudServer(database_url) for _ in range(count)]
    try:
        for s in servers:  # one at a time: the first one migrates the schema
            s.start()
        yield servers
    finally:
        for s in servers:
            s.close()


# ---------------------------------------------------------------------- main
def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--devices", type=int, default=16, help="concurrent simulated devices")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per config")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    p.add_argument("--batch", type=int, default=32, help="records per request")
    p.add_argument(
        "--max-rate",
        type=float,
        default=60_000,
        help="records/s the pre-built bodies must last for (an upper bound)",
    )
    p.add_argument("--no-postgres", action="store_true", help="SQLite configurations only")
    args = p.parse_args()
    if args.smoke:
        args.devices, args.seconds, args.warmup, args.max_rate = 4, 1.0, 0.3, 5_000.0
    use_pg = not args.no_postgres and bl.postgres_reachable()
    if not args.no_postgres and not use_pg:
        if not args.smoke:
            raise SystemExit("PostgreSQL at 127.0.0.1:5432 is not reachable; use --no-postgres")
        bl.note("[cloud_ingest] PostgreSQL not reachable: SQLite only")
    texts = [json.dumps(x, separators=(",", ":")) for x in bl.predictions(500, seed=4)]

    configs: list[tuple[str, str, int, bool]] = [
        ("SQLite, 1 replica, gzip", "sqlite", 1, True),
        ("SQLite, 1 replica, no gzip", "sqlite", 1, False),
    ]
    if use_pg:
        configs += [
            ("PostgreSQL, 1 replica, gzip", "pg", 1, True),
            ("PostgreSQL, 2 replicas, gzip", "pg", 2, True),
        ]
    res: dict[str, dict[str, Any]] = {}
    with bl.scratch_dir() as tmp:
        for i, (name, backend, count, use_gzip) in enumerate(configs):
            bl.note(f"[cloud_ingest] {name}")
            with contextlib.ExitStack() as stack:
                url = (
                    stack.enter_context(bl.fresh_postgres_database())
                    if backend == "pg"
                    else bl.sqlite_url(tmp / f"cloud-{i}.db")
                )
                servers = stack.enter_context(replicas(url, count))
                pids = [s.process.pid for s in servers if s.process is not None]
                res[name] = run_load([s.url for s in servers], pids, args, use_gzip, texts)

    base = res["SQLite, 1 replica, gzip"]
    table = bl.Table(
        f"cloud ingest — {args.devices} devices, {args.batch}-record batches, "
        f"{args.seconds:g} s measured per configuration",
        [
            "configuration",
            "records/s",
            "× SQLite gzip",
            "p50 ms",
            "p99 ms",
            "wire B/rec",
            "body B/rec",
            "replicas %",
            "postgres %",
            "loadgen %",
            "others %",
            "busy %",
            "errors",
        ],
        footer=f"CPU columns: % of one core over the measured window ({os.cpu_count()} cores ="
        f" {100 * (os.cpu_count() or 1)}%); others = processes not part of this run",
    )
    for name, r in res.items():
        table.add(
            name,
            r["records_per_s"],
            bl.ratio(r["records_per_s"], base["records_per_s"]),
            r["p50_ms"],
            r["p99_ms"],
            r["wire_bytes_per_record"],
            r["body_bytes_per_record"],
            r["server_cpu_pct"],
            r["postgres_cpu_pct"],
            r["loadgen_cpu_pct"],
            r["others_cpu_pct"],
            r["machine_busy_pct"],
            r["errors"],
        )

    targets = bl.Table("targets", ["target", "measured", "peer", "ratio", "wanted", "result"])
    notes = bl.Table("notes", ["fact", "value"])
    checks = []
    pg1, pg2 = res.get("PostgreSQL, 1 replica, gzip"), res.get("PostgreSQL, 2 replicas, gzip")
    if pg1 and pg2:
        r = bl.ratio(pg2["records_per_s"], pg1["records_per_s"])
        ok = r is not None and r >= 1.5
        targets.add(
            "records/s: 2 PostgreSQL replicas vs 1",
            pg2["records_per_s"],
            pg1["records_per_s"],
            r,
            "≥ 1.5×",
            bl.verdict(ok),
        )
        checks.append({"target": "2 PostgreSQL replicas vs 1", "ratio": r, "pass": ok})
    else:
        targets.add(
            "records/s: 2 PostgreSQL replicas vs 1",
            None,
            None,
            None,
            "≥ 1.5×",
            "skipped (no PostgreSQL)",
        )
    if pg2 and pg2["machine_busy_pct"] is not None:
        saturated = pg2["machine_busy_pct"] >= 0.95 * 100 * (os.cpu_count() or 1)
        notes.add("machine CPU-saturated during the 2-replica run (no room to scale)", saturated)
    plain = res["SQLite, 1 replica, no gzip"]
    notes.add(
        "gzip saves on the wire, bytes/record",
        plain["wire_bytes_per_record"] - base["wire_bytes_per_record"]
        if plain["wire_bytes_per_record"] and base["wire_bytes_per_record"]
        else None,
    )
    notes.add(
        "gzip compression ratio of a request body",
        bl.ratio(plain["body_bytes_per_record"], base["body_bytes_per_record"]),
    )
    notes.add(
        "a device ran out of pre-built bodies (raise --max-rate)",
        any(r["ran_out"] for r in res.values()),
    )
    bl.report(
        "cloud_ingest",
        [table, targets, notes],
        {
            "configurations": res,
            "targets": checks,
            "devices": args.devices,
            "batch": args.batch,
            "seconds": args.seconds,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
