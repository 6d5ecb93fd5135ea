"""Footprint: what edgebuf costs an edge box when it is doing nothing, and per record on disk.

    python bench/footprint.py [--window 60] [--records 10000] [--import-runs 7]

- Import time: wall time of a fresh ``python -c "import edgebuf"`` minus a bare
  ``python -c "pass"`` (median of ``--import-runs``, interleaved), next to ``import httpx``
  (edgebuf's transport, a floor) and ``import persistqueue`` (the Python peer); plus where
  the time goes, by top-level package, from ``-X importtime``.
- Idle client: a started client in a subprocess (once with a live cloud, once pointed at
  a closed port): RSS 5 s after start, and CPU (``/proc/<pid>/stat`` utime + stime) over
  ``--window`` seconds, next to a bare interpreter and an open persist-queue, measured at
  the same time. Target: well under 1% of one core.
- Disk: bytes per record of ``--records`` typical records (db + WAL files): pending, sent
  but kept, and after ``cleanup()`` of the sent rows; next to the JSON payload itself, a
  raw SQLite table of the JSON and persist-queue's file.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import benchlib as bl

MB = 1024 * 1024
IDLE_PROGRAMS = {
    "bare python": "import sys, time\nprint('ready', flush=True)\ntime.sleep(1e6)\n",
    "persist-queue, open": (
        "import sys, time, persistqueue\n"
        "q = persistqueue.SQLiteAckQueue(sys.argv[1], auto_commit=True, multithreading=True)\n"
        "print('ready', flush=True)\ntime.sleep(1e6)\n"
    ),
}


# ---------------------------------------------------------------------- import time
def _wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def import_times(runs: int) -> dict[str, float]:
    codes = {"bare": "pass", "edgebuf": "import edgebuf", "httpx": "import httpx",
             "persistqueue": "import persistqueue"}
    samples: dict[str, list[float]] = defaultdict(list)
    _wall("import edgebuf, httpx, persistqueue")  # warm the file cache and .pyc files
    for _ in range(runs):
        for name, code in codes.items():
            samples[name].append(_wall(code))
    bare = bl.median(samples["bare"])
    return {name: bl.median(s) - bare for name, s in samples.items() if name != "bare"} | {
        "bare": bare}


def import_breakdown(top: int = 6) -> list[tuple[str, float]]:
    """Self time of ``import edgebuf`` summed by top-level package, largest first (ms)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgebuf"],
                          check=True, capture_output=True, text=True)
    by_package: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if m:
            by_package[m.group(2).split(".")[0]] += int(m.group(1)) / 1e3
    return sorted(by_package.items(), key=lambda kv: -kv[1])[:top]


# ---------------------------------------------------------------------- idle processes
def idle_client_main(args: argparse.Namespace) -> None:
    from edgebuf import EnhancedAsyncLoggingClient

    client = EnhancedAsyncLoggingClient(args.endpoint, args.db, "bench-idle")
    client.start()
    print("ready", flush=True)
    try:
        time.sleep(1e6)
    finally:
        client.close(timeout=2)


def start_idle(name: str, argv: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{name}: idle process did not start")
    return proc


def idle_processes(tmp: Path, window: float, settle: float) -> dict[str, dict[str, float]]:
    from cloud.testing import CloudServer, free_port

    server = CloudServer(bl.sqlite_url(tmp / "cloud.db"))
    procs: dict[str, subprocess.Popen] = {}
    try:
        server.start()
        me = str(Path(__file__).resolve())
        argvs = {
            "edgebuf client, started, cloud up": [
                sys.executable, me, "--idle-child", "--db", str(tmp / "idle-up.db"),
                "--endpoint", server.url],
            "edgebuf client, started, cloud down": [
                sys.executable, me, "--idle-child", "--db", str(tmp / "idle-down.db"),
                "--endpoint", f"http://127.0.0.1:{free_port()}"],
            "bare python": [sys.executable, "-c", IDLE_PROGRAMS["bare python"]],
            "persist-queue, open": [sys.executable, "-c", IDLE_PROGRAMS["persist-queue, open"],
                                    str(tmp / "pq-idle")],
        }
        for name, argv in argvs.items():
            procs[name] = start_idle(name, argv)
        time.sleep(settle)
        out = {name: {"rss_bytes": bl.rss_bytes(p.pid)} for name, p in procs.items()}
        cpu0 = {name: bl.cpu_seconds(p.pid) for name, p in procs.items()}
        t0 = time.perf_counter()
        time.sleep(window)
        elapsed = time.perf_counter() - t0
        for name, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited during the window ({p.returncode})")
            out[name]["cpu_s"] = bl.cpu_seconds(p.pid) - cpu0[name]
            out[name]["cpu_pct"] = 100 * out[name]["cpu_s"] / elapsed
            out[name]["rss_end_bytes"] = bl.rss_bytes(p.pid)
        return out
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        server.close()


# ---------------------------------------------------------------------- disk
def disk_per_record(tmp: Path, n: int) -> dict[str, Any]:
    from cloud.testing import free_port
    from edgebuf import EnhancedAsyncLoggingClient

    preds = bl.predictions(1_000, seed=5)
    texts = [json.dumps(p, separators=(",", ":")) for p in preds]
    out: dict[str, Any] = {"payload_bytes": sum(len(texts[i % 1000]) for i in range(n)) / n}
    endpoint = f"http://127.0.0.1:{free_port()}"
    db = tmp / "edge.db"

    def client() -> EnhancedAsyncLoggingClient:
        return EnhancedAsyncLoggingClient(endpoint, db, "bench-disk")  # never started

    c = client()
    for i in range(n):
        c.log_prediction(preds[i % 1000], image_id=f"frame-{i:08d}", model_version="yolov8n")
    c.close()
    out["edgebuf_pending"] = bl.file_bytes(db) / n
    reserve = Path(f"{db}.reserve")
    out["reserve_bytes"] = reserve.stat().st_size if reserve.exists() else 0

    c = client()  # acknowledge everything, as the sender does after a 2xx
    while (batch := c.store.claim(512)) is not None:
        c.store.mark_sent(batch.ids)
    c.close()
    out["edgebuf_sent_kept"] = bl.file_bytes(db) / n

    c = client()
    cleaned = c.cleanup(older_than_days=0)
    c.close()
    out["edgebuf_after_cleanup_total"] = bl.file_bytes(db)
    out["cleanup_deleted"] = cleaned.get("deleted")

    raw = tmp / "raw.db"
    conn = sqlite3.connect(raw, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")
    for i in range(n):
        conn.execute("INSERT INTO records (data) VALUES (?)", (texts[i % 1000],))
    conn.close()
    out["raw_sqlite"] = bl.file_bytes(raw) / n

    import persistqueue

    q = persistqueue.SQLiteAckQueue(str(tmp / "pq"), auto_commit=True, multithreading=True)
    for i in range(n):
        q.put(preds[i % 1000])
    q.close()
    out["persist_queue"] = sum(bl.file_bytes(f) for f in (tmp / "pq").glob("*.db")) / n
    return out


# ---------------------------------------------------------------------- main
def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--window", type=float, default=60.0, help="seconds of idle CPU measurement")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after start before RSS")
    p.add_argument("--records", type=int, default=10_000, help="records for bytes per record")
    p.add_argument("--import-runs", type=int, default=7, help="fresh interpreters per import")
    p.add_argument("--idle-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.idle_child:
        idle_client_main(args)
        return
    if args.smoke:
        args.window, args.settle, args.records, args.import_runs = 3.0, 1.0, 500, 2

    bl.note("[footprint] import time")
    imports = import_times(args.import_runs)
    breakdown = import_breakdown()
    with bl.scratch_dir() as tmp:
        bl.note(f"[footprint] idle processes: {args.settle:g} s settle, {args.window:g} s window")
        idle = idle_processes(tmp, args.window, args.settle)
        bl.note(f"[footprint] disk bytes per record, {args.records:,} records")
        disk = disk_per_record(tmp, args.records)

    t_imp = bl.Table(
        f"import time (fresh interpreter minus bare `python -c pass` = {imports['bare'] * 1e3:.0f}"
        f" ms; medians of {args.import_runs})",
        ["module", "ms", "× httpx"],
    )
    for name in ("edgebuf", "httpx", "persistqueue"):
        t_imp.add(f"import {name}", imports[name] * 1e3, bl.ratio(imports[name], imports["httpx"]))
    t_where = bl.Table(
        "where `import edgebuf` spends its time (self time by package, -X importtime)",
        ["package", "ms"],
    )
    for pkg, ms in breakdown:
        t_where.add(pkg, ms)

    bare = idle["bare python"]
    t_idle = bl.Table(
        f"idle processes: RSS {args.settle:g} s after start, CPU over {args.window:g} s",
        ["process", "RSS MB", "× bare python", "CPU ms", "CPU % of a core"],
        footer="CPU is counted in clock ticks of 10 ms: 0 means under one tick in the window",
    )
    for name, r in idle.items():
        t_idle.add(name, r["rss_bytes"] / MB, bl.ratio(r["rss_bytes"], bare["rss_bytes"]),
                   round(r["cpu_s"] * 1e3), f"{r['cpu_pct']:.3f}")

    t_disk = bl.Table(f"disk bytes per record, {args.records:,} typical records (db + WAL)",
                      ["store", "bytes/record", "× JSON payload", "× raw SQLite"])
    rows = [
        ("JSON payload itself", disk["payload_bytes"]),
        ("raw SQLite table (id, json)", disk["raw_sqlite"]),
        ("persist-queue SQLiteAckQueue", disk["persist_queue"]),
        ("edgebuf, pending", disk["edgebuf_pending"]),
        ("edgebuf, sent, kept (no cleanup)", disk["edgebuf_sent_kept"]),
        ("edgebuf, after cleanup(0), whole file / records",
         disk["edgebuf_after_cleanup_total"] / args.records),
    ]
    for name, v in rows:
        t_disk.add(name, v, bl.ratio(v, disk["payload_bytes"]), bl.ratio(v, disk["raw_sqlite"]))

    targets = bl.Table("targets", ["target", "measured", "wanted", "result"])
    checks = []
    for name in ("edgebuf client, started, cloud up", "edgebuf client, started, cloud down"):
        pct = idle[name]["cpu_pct"]
        targets.add(f"idle CPU, {name.split(', ', 2)[2]}, % of a core", f"{pct:.3f}",
                    "well under 1%", bl.verdict(pct < 1.0))
        checks.append({"target": f"idle CPU {name}", "cpu_pct": pct, "pass": pct < 1.0})
    notes = bl.Table("notes", ["fact", "value"])
    notes.add("disk reserve ballast beside the buffer (fixed, not per record), MB",
              disk["reserve_bytes"] / MB)
    notes.add("file after cleanup(0), bytes", disk["edgebuf_after_cleanup_total"])
    notes.add("rows deleted by cleanup(0)", disk["cleanup_deleted"])
    bl.report("footprint", [t_imp, t_where, t_idle, t_disk, targets, notes],
              {"import_s": imports, "import_breakdown_ms": breakdown, "idle": idle,
               "disk": disk, "targets": checks}, args.json)


if __name__ == "__main__":
    main()
