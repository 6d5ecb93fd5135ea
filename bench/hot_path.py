"""Hot path: the cost of one log_prediction / log_predictions call, next to its limits.

    python bench/hot_path.py [--records 20000] [--full-records 5000] [--bulk-records 51200]
                             [--repeat 3] [--live-records 20000] [--paced-seconds 4]

Every case commits the same YOLO-like prediction dicts to a fresh SQLite file in a
temporary directory, timing each call with perf_counter_ns:

- edgebuf ``log_prediction`` (one record) and ``log_predictions`` (32 and 256 per call), in
  both durability modes, client not started (no threads, no network);
- raw sqlite3, WAL, one autocommitted ``INSERT`` of ``json.dumps(prediction)`` per record
  (synchronous NORMAL / FULL): the limit for a durable per-record commit;
- raw sqlite3 ``executemany`` of the same, one transaction per call: the limit for bulk;
- raw sqlite3 ``executemany`` of the same rows into edgebuf's own table and index: how
  much of the bulk gap is SQLite storing the delivery columns, and how much is edgebuf;
- persist-queue ``SQLiteAckQueue.put`` (auto_commit, multithreading): the Python peer;
- paced at ``--paced-rate`` (200 records/s, a few cameras): raw commit, edgebuf, and
  edgebuf with its sender thread shipping to a live cloud (real ``python -m cloud`` on
  SQLite), so contention between logging and sending shows against the same call
  without it (a paced call is slower than a flat-out one for both: caches go cold
  between calls); and edgebuf with the sender logging flat out.

Every case runs ``--repeat`` times, interleaved, and each statistic is the median over
the repeats.

Targets: p99 within 2x of the raw per-record commit, throughput >= 5x persist-queue,
bulk >= 75% of raw executemany.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as bl

from cloud.testing import CloudServer, free_port
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.store.queue import new_record_ids
from edgebuf.store.schema import CREATE_STATEMENTS

DEVICE = "bench-hot"
MODEL = "yolov8n-factory-1"
SYNC = {"normal": "NORMAL", "full": "FULL"}


# ---------------------------------------------------------------------- timing
def timed_calls(
    call: Callable[[Any], object], items: list[Any], warmup: int, rate: float | None = None
) -> dict[str, Any]:
    """Call ``call(item)`` for each item, flat out or at ``rate`` calls/s; only the calls
    are timed, and the first ``warmup`` calls are not recorded."""
    for item in items[:warmup]:
        call(item)
    measured = items[warmup:]
    samples = [0] * len(measured)
    clock = time.perf_counter_ns
    start = next_at = clock()
    interval = int(1e9 / rate) if rate else 0
    for i, item in enumerate(measured):
        t0 = clock()
        call(item)
        t1 = clock()
        samples[i] = t1 - t0
        if interval:
            next_at += interval
            if next_at > t1:
                time.sleep((next_at - t1) / 1e9)
    elapsed = (clock() - start) / 1e9
    return {"samples": samples, "elapsed": elapsed, "calls": len(measured)}


def summarise(run: dict[str, Any], per_call: int) -> dict[str, Any]:
    out = bl.latency_summary(run["samples"])
    out["calls"] = run["calls"]
    out["records"] = run["calls"] * per_call
    out["records_per_s"] = out["records"] / run["elapsed"] if run["elapsed"] else float("nan")
    return out


# ---------------------------------------------------------------------- cases
RAW_TABLE = ("CREATE TABLE records (id INTEGER PRIMARY KEY, data TEXT NOT NULL)",)


def _raw_connection(
    path: Path, sync: str, schema: tuple[str, ...] = RAW_TABLE
) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: one INSERT = one commit
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    for statement in schema:
        conn.execute(statement)
    return conn


def raw_single(
    path: Path, preds: list[dict], n: int, warmup: int, mode: str, rate: float | None = None
) -> dict[str, Any]:
    conn = _raw_connection(path, SYNC[mode])
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    sql = "INSERT INTO records (data) VALUES (?)"

    def call(p: dict) -> None:
        conn.execute(sql, (dumps(p),))

    try:
        return summarise(timed_calls(call, cycle(preds, n + warmup), warmup, rate), 1)
    finally:
        conn.close()


def raw_bulk(
    path: Path, preds: list[dict], n: int, warmup: int, mode: str, per_call: int
) -> dict[str, Any]:
    conn = _raw_connection(path, SYNC[mode])
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    sql = "INSERT INTO records (data) VALUES (?)"

    def call(chunk: list[dict]) -> None:
        conn.execute("BEGIN")
        conn.executemany(sql, [(dumps(p),) for p in chunk])
        conn.execute("COMMIT")

    try:
        chunks = chunked(cycle(preds, n + warmup * per_call), per_call)
        return summarise(timed_calls(call, chunks, warmup), per_call)
    finally:
        conn.close()


def raw_bulk_schema(
    path: Path, preds: list[dict], n: int, warmup: int, mode: str, per_call: int
) -> dict[str, Any]:
    """executemany of the same rows straight into edgebuf's own table and index: what
    SQLite alone charges for the columns exactly-once delivery keeps (record id, device,
    sequence, timestamps, status index), with none of edgebuf's Python around it."""
    conn = _raw_connection(path, SYNC[mode], CREATE_STATEMENTS)
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    sql = (
        "INSERT INTO prediction_buffer (record_id, device_id, seq, prediction_data, image_id,"
        " model_version, timestamp, buffered_at, priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    seq = 0

    def call(chunk: list[tuple[int, dict]]) -> None:
        nonlocal seq
        now = time.time()
        ids = new_record_ids(len(chunk))
        conn.execute("BEGIN")
        conn.executemany(
            sql,
            [
                (rid, DEVICE, seq + j, dumps(p), f"frame-{i:08d}", MODEL, now, now, 1)
                for j, (rid, (i, p)) in enumerate(zip(ids, chunk))
            ],
        )
        conn.execute("COMMIT")
        seq += len(chunk)

    try:
        items = list(enumerate(cycle(preds, n + warmup * per_call)))
        return summarise(timed_calls(call, chunked(items, per_call), warmup), per_call)
    finally:
        conn.close()


def _client(path: Path, mode: str) -> EnhancedAsyncLoggingClient:
    # Never started, and the endpoint is a port nobody listens on: no thread, no network.
    return EnhancedAsyncLoggingClient(
        f"http://127.0.0.1:{free_port()}", path, DEVICE, durability=mode
    )


def edgebuf_single(
    path: Path, preds: list[dict], n: int, warmup: int, mode: str, rate: float | None = None
) -> dict[str, Any]:
    client = _client(path, mode)
    items = [(p, f"frame-{i:08d}") for i, p in enumerate(cycle(preds, n + warmup))]

    def call(item: tuple[dict, str]) -> None:
        client.log_prediction(item[0], image_id=item[1], model_version=MODEL)

    try:
        return summarise(timed_calls(call, items, warmup, rate), 1)
    finally:
        client.close()


def edgebuf_bulk(
    path: Path, preds: list[dict], n: int, warmup: int, mode: str, per_call: int
) -> dict[str, Any]:
    client = _client(path, mode)
    items = [
        {"prediction": p, "image_id": f"frame-{i:08d}", "model_version": MODEL}
        for i, p in enumerate(cycle(preds, n + warmup * per_call))
    ]
    try:
        return summarise(
            timed_calls(client.log_predictions, chunked(items, per_call), warmup), per_call
        )
    finally:
        client.close()


def persist_queue(path: Path, preds: list[dict], n: int, warmup: int) -> dict[str, Any]:
    import persistqueue

    queue = persistqueue.SQLiteAckQueue(str(path), auto_commit=True, multithreading=True)
    try:
        result = summarise(timed_calls(queue.put, cycle(preds, n + warmup), warmup), 1)
        # persist-queue sets WAL but leaves synchronous at SQLite's default (FULL = 2 here).
        putter = getattr(queue, "_putter", None)  # private; only read for the notes
        if putter is not None:
            result["synchronous"] = putter.execute("PRAGMA synchronous").fetchone()[0]
        return result
    finally:
        queue.close()


def edgebuf_live(
    tmp: Path, preds: list[dict], n: int, warmup: int, rate: float | None
) -> dict[str, Any]:
    """log_prediction with the sender thread shipping to a real cloud (SQLite) meanwhile."""
    server = CloudServer(bl.sqlite_url(tmp / "cloud.db"))
    client = None
    try:
        server.start()
        client = EnhancedAsyncLoggingClient(server.url, tmp / "live.db", DEVICE)
        client.start()
        items = [(p, f"frame-{i:08d}") for i, p in enumerate(cycle(preds, n + warmup))]

        def call(item: tuple[dict, str]) -> None:
            client.log_prediction(item[0], image_id=item[1], model_version=MODEL)

        run = timed_calls(call, items, warmup, rate)
        result = summarise(run, 1)
        t0 = time.perf_counter()
        delivered = client.flush(timeout=120)
        result["flush_s"] = time.perf_counter() - t0
        result["all_delivered"] = delivered
        result["sent"] = client.store.counts()["sent"]
        return result
    finally:
        if client is not None:
            client.close(timeout=5)
        server.close()


# ---------------------------------------------------------------------- helpers
def cycle(pool: list, n: int) -> list:
    return [pool[i % len(pool)] for i in range(n)]


def chunked(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items) - size + 1, size)]


# ---------------------------------------------------------------------- main
def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument(
        "--records",
        type=int,
        default=20_000,
        help="single-record calls per case (synchronous NORMAL cases, persist-queue)",
    )
    p.add_argument(
        "--full-records",
        type=int,
        default=5_000,
        help="single-record calls per case with synchronous FULL (fsync each)",
    )
    p.add_argument(
        "--bulk-records",
        type=int,
        default=51_200,
        help="records per bulk case (split into calls of 32 or 256)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each no-network case")
    p.add_argument(
        "--live-records",
        type=int,
        default=20_000,
        help="records logged flat out while the sender ships to a live cloud",
    )
    p.add_argument(
        "--paced-seconds",
        type=float,
        default=4.0,
        help="seconds of each paced case (raw, edgebuf, edgebuf + sender)",
    )
    p.add_argument(
        "--paced-rate",
        type=float,
        default=200.0,
        help="records/s of the paced cases (a few cameras' worth)",
    )
    args = p.parse_args()
    if args.smoke:
        args.records, args.full_records, args.bulk_records = 500, 200, 2_048
        args.repeat, args.live_records, args.paced_seconds = 1, 500, 1.0
    warmup = min(200, max(10, args.records // 50))
    preds = bl.predictions(2_000, seed=1)
    payload_bytes = bl.median([len(json.dumps(x, separators=(",", ":"))) for x in preds])

    # name -> (kind, mode, per_call, runner(tmp_dir) -> result)
    cases: dict[str, tuple[str, str, int, Callable[[Path], dict[str, Any]]]] = {}
    for mode in ("normal", "full"):
        n_single = args.records if mode == "normal" else args.full_records
        cases[f"raw commit/{mode}"] = (
            "raw",
            mode,
            1,
            lambda d, m=mode, n=n_single: raw_single(d / "raw.db", preds, n, warmup, m),
        )
        cases[f"edgebuf/{mode}"] = (
            "edgebuf",
            mode,
            1,
            lambda d, m=mode, n=n_single: edgebuf_single(d / "edge.db", preds, n, warmup, m),
        )
        for k in (32, 256):
            bulk_warm = max(2, warmup // k)
            cases[f"raw executemany/{mode}/{k}"] = (
                "raw",
                mode,
                k,
                lambda d, m=mode, k=k, w=bulk_warm: raw_bulk(
                    d / "raw.db", preds, args.bulk_records, w, m, k
                ),
            )
            cases[f"raw executemany, edgebuf's table/{mode}/{k}"] = (
                "raw",
                mode,
                k,
                lambda d, m=mode, k=k, w=bulk_warm: raw_bulk_schema(
                    d / "raw.db", preds, args.bulk_records, w, m, k
                ),
            )
            cases[f"edgebuf bulk/{mode}/{k}"] = (
                "edgebuf",
                mode,
                k,
                lambda d, m=mode, k=k, w=bulk_warm: edgebuf_bulk(
                    d / "edge.db", preds, args.bulk_records, w, m, k
                ),
            )
    cases["persist-queue put"] = (
        "peer",
        "default",
        1,
        lambda d: persist_queue(d / "pq", preds, args.records, warmup),
    )

    rate = args.paced_rate
    n_paced = max(10, int(args.paced_seconds * rate))
    paced_warmup = min(warmup, 20)
    at = f"{rate:g}/s"
    cases[f"raw commit/normal, {at}"] = (
        "raw",
        "normal",
        1,
        lambda d: raw_single(d / "raw.db", preds, n_paced, paced_warmup, "normal", rate),
    )
    cases[f"edgebuf/normal, {at}"] = (
        "edgebuf",
        "normal",
        1,
        lambda d: edgebuf_single(d / "edge.db", preds, n_paced, paced_warmup, "normal", rate),
    )
    cases[f"edgebuf + sender, {at}"] = (
        "edgebuf",
        "normal",
        1,
        lambda d: edgebuf_live(d, preds, n_paced, paced_warmup, rate),
    )
    cases["edgebuf + sender, flat out"] = (
        "edgebuf",
        "normal",
        1,
        lambda d: edgebuf_live(d, preds, args.live_records, warmup, None),
    )

    # Interleaved: each repeat runs every case once, so slow spells of a shared machine
    # spread over all cases instead of landing on one.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for rep in range(args.repeat):
        for name, (_, _, _, runner) in cases.items():
            bl.note(f"[hot_path] repeat {rep + 1}/{args.repeat}: {name}")
            with bl.scratch_dir() as tmp:
                runs[name].append(runner(tmp))
    res = {name: bl.median_of(r) for name, r in runs.items()}

    # ------------------------------------------------------------------ tables
    limit_of = {
        "edgebuf/normal": "raw commit/normal",
        "edgebuf/full": "raw commit/full",
        "persist-queue put": "raw commit/full",
        f"edgebuf/normal, {at}": f"raw commit/normal, {at}",
        # contention: the same call with and without the sender thread shipping
        f"edgebuf + sender, {at}": f"edgebuf/normal, {at}",
        "edgebuf + sender, flat out": "edgebuf/normal",
    }
    for mode in ("normal", "full"):
        for k in (32, 256):
            limit_of[f"edgebuf bulk/{mode}/{k}"] = f"raw executemany/{mode}/{k}"

    table = bl.Table(
        f"log_prediction hot path — payload {payload_bytes:.0f} B of JSON per record, "
        f"medians of {args.repeat} run(s)",
        [
            "case",
            "rec/call",
            "calls",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "records/s",
            "compared with",
            "p99 ×",
            "rec/s ×",
        ],
    )
    all_rows = res
    paced = {name for name in res if name.endswith(at)}  # their records/s is the pacing
    for name, r in all_rows.items():
        per_call = cases[name][2] if name in cases else 1
        ref = limit_of.get(name)
        ref_r = all_rows.get(ref) if ref else None
        table.add(
            name,
            per_call,
            r["calls"],
            r["p50_us"],
            r["p99_us"],
            r["p999_us"],
            r["records_per_s"],
            ref or "",
            bl.ratio(r["p99_us"], ref_r["p99_us"]) if ref_r else None,
            bl.ratio(r["records_per_s"], ref_r["records_per_s"])
            if ref_r and name not in paced
            else None,
        )

    targets = bl.Table(
        "targets", ["target", "edgebuf", "limit / peer", "ratio", "wanted", "result"]
    )
    checks: list[dict[str, Any]] = []

    def check(label: str, mine: float, theirs: float, wanted: str, ok: bool) -> None:
        ratio = bl.ratio(mine, theirs)
        targets.add(label, mine, theirs, ratio, wanted, bl.verdict(ok))
        checks.append(
            {
                "target": label,
                "edgebuf": mine,
                "reference": theirs,
                "ratio": ratio,
                "wanted": wanted,
                "pass": ok,
            }
        )

    for mode in ("normal", "full"):
        mine, lim = res[f"edgebuf/{mode}"]["p99_us"], res[f"raw commit/{mode}"]["p99_us"]
        check(f"p99 µs, {mode}: edgebuf vs raw commit", mine, lim, "≤ 2×", mine <= 2 * lim)
    mine = res[f"edgebuf/normal, {at}"]["p99_us"]
    lim = res[f"raw commit/normal, {at}"]["p99_us"]
    check(f"p99 µs, normal, paced {at}: edgebuf vs raw commit", mine, lim, "≤ 2×", mine <= 2 * lim)
    mine, peer = res["edgebuf/normal"]["records_per_s"], res["persist-queue put"]["records_per_s"]
    check(
        "records/s, single: edgebuf normal vs persist-queue", mine, peer, "≥ 5×", mine >= 5 * peer
    )
    for mode in ("normal", "full"):
        for k in (32, 256):
            mine = res[f"edgebuf bulk/{mode}/{k}"]["records_per_s"]
            lim = res[f"raw executemany/{mode}/{k}"]["records_per_s"]
            check(
                f"records/s, bulk {k}, {mode}: edgebuf vs executemany",
                mine,
                lim,
                "≥ 0.75×",
                mine >= 0.75 * lim,
            )

    sync_pq = res["persist-queue put"].get("synchronous")
    info = bl.Table("notes", ["fact", "value"])
    info.add("persist-queue PRAGMA synchronous (0 off, 1 normal, 2 full)", sync_pq)
    # No per-record durable commit can beat persist-queue by more than raw sqlite3 does.
    info.add(
        "ceiling of the persist-queue ratio: raw commit/normal rec/s ÷ persist-queue rec/s",
        bl.ratio(res["raw commit/normal"]["records_per_s"], peer),
    )
    for mode in ("normal", "full"):
        for k in (32, 256):
            schema = res[f"raw executemany, edgebuf's table/{mode}/{k}"]["records_per_s"]
            info.add(
                f"bulk {k}, {mode}: raw executemany into edgebuf's table ÷ into a 1-column"
                " table (SQLite's price for the delivery columns)",
                bl.ratio(schema, res[f"raw executemany/{mode}/{k}"]["records_per_s"]),
            )
            info.add(
                f"bulk {k}, {mode}: edgebuf ÷ raw executemany into edgebuf's table"
                " (edgebuf's own overhead)",
                bl.ratio(res[f"edgebuf bulk/{mode}/{k}"]["records_per_s"], schema),
            )
    for name, r in res.items():
        if "sent" in r:
            info.add(f"{name}: records in the cloud after flush", r["sent"])
            info.add(f"{name}: flush after logging, s", r["flush_s"])
    results = {
        "payload_bytes": payload_bytes,
        "cases": {k: {x: y for x, y in v.items() if x != "samples"} for k, v in all_rows.items()},
        "targets": checks,
        "runs": {
            k: [{x: y for x, y in r.items() if x != "samples"} for r in v] for k, v in runs.items()
        },
    }
    bl.report("hot_path", [table, targets, info], results, args.json)


if __name__ == "__main__":
    main()
