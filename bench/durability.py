"""The price of each durability choice: log_prediction latency and bytes written per record.

    python bench/durability.py [--seconds 10] [--rate 440] [--ingest-seconds 8]

Edge: one in-process ``EnhancedAsyncLoggingClient`` on a buffer in a scratch folder on this
machine's disk, at camera rate (20 cameras x 22 fps on one box = 440 records/s, paced) and
flat out, with the cloud down (an outage: nothing is deleted, the WAL only grows) and up (a
local ``python -m cloud`` on SQLite; its writes are not counted), in three modes:

- ``full``: ``synchronous=FULL``, every returned call on disk;
- ``normal``: ``synchronous=NORMAL`` plus the WAL fsynced within ``sync_interval`` = 1 s;
- ``normal, before``: the behaviour before the sync interval (no WAL sync between
  checkpoints; during an outage nothing bounded the window);
- ``normal, sync 1 s, log_predictions x22``: the same records, one call (one commit) per
  camera-second of 22 records: what batching the commits saves in bytes written.

Per case: ``log_prediction`` p50/p99, bytes this process caused to be written to the block
device per record (``/proc/self/io`` ``write_bytes``, counted when a page is dirtied, so a
page rewritten before it reaches the disk counts once; the filesystem's journal is not
included), write amplification = written bytes / JSON bytes logged, and what that is per
day at 440 records/s (the figure flash endurance is rated in).

Cloud: records/s of one SQLite replica, 16 devices, 32-record gzip batches (the
``bench/cloud_ingest.py`` load), with the durable default (``synchronous=FULL``) and with
``EDGEBUF_DURABLE_ACK=false`` (``NORMAL``, the behaviour before), one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import benchlib as bl

from cloud.testing import CloudServer, free_port
from edgebuf.client import EnhancedAsyncLoggingClient

# (label, durability, WAL sync, records per call)
MODES = [("full", "full", True, 1), ("normal, sync 1 s", "normal", True, 1),
         ("normal, before", "normal", False, 1),
         ("normal, sync 1 s, log_predictions x22", "normal", True, 22)]  # fmt: skip


def write_bytes() -> int:
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def run_edge(tmp: Path, durability: str, sync: bool, rate: float, seconds: float,
             endpoint: str, preds: list[dict[str, Any]], per_call: int = 1
             ) -> dict[str, Any]:  # fmt: skip
    db = tmp / f"edge-{time.monotonic_ns()}.db"
    client = EnhancedAsyncLoggingClient(
        endpoint, db, "bench-cam", durability=durability, sync_interval=1.0,
        batch_timeout=1.0, max_retries=1, monitor_interval=5.0, health_timeout=0.5,
        request_timeout=5.0, reserve_bytes=0,
    )  # fmt: skip
    if not sync:
        client.syncer = None  # the client as it was before WalSyncer
    client.start()
    texts = [json.dumps(p, separators=(",", ":")) for p in preds]
    lat: list[int] = []
    logged_json = 0
    w0 = write_bytes()
    t0 = time.perf_counter()
    end = t0 + seconds
    i = 0
    clock = time.perf_counter_ns
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if rate:
            due = t0 + i / rate
            if due > now:
                time.sleep(due - now)
        k = i % len(preds)
        a = clock()
        if per_call == 1:
            client.log_prediction(preds[k], image_id=f"f{i}")
        else:  # one camera-second per call: one commit for 22 records
            ks = [(k + j) % len(preds) for j in range(per_call)]
            client.log_predictions([{"prediction": preds[x]} for x in ks])
            logged_json += sum(len(texts[x]) for x in ks[1:])
        lat.append(clock() - a)
        logged_json += len(texts[k])
        i += per_call
    elapsed = time.perf_counter() - t0
    written = write_bytes() - w0
    syncs = client.syncer.syncs if client.syncer is not None else 0
    client.close(timeout=2.0)
    lat.sort()
    s = bl.latency_summary(lat)
    per_record = written / i if i else None
    return {
        "records": i, "records_per_s": i / elapsed, "p50_us": s["p50_us"], "p99_us": s["p99_us"],
        "write_bytes": written, "bytes_per_record": per_record,
        "json_bytes_per_record": logged_json / i if i else None,
        "write_amplification": written / logged_json if logged_json else None,
        "gb_per_day_at_440": per_record * 440 * 86_400 / 1e9 if per_record else None,
        "wal_syncs": syncs,
    }  # fmt: skip


def run_ingest(tmp: Path, seconds: float, smoke: bool) -> dict[str, dict[str, Any]]:
    import cloud_ingest as ci

    args = argparse.Namespace(devices=4 if smoke else 16, seconds=seconds,
                              warmup=0.3 if smoke else 1.0, batch=32,
                              max_rate=5_000.0 if smoke else 60_000.0)  # fmt: skip
    texts = [json.dumps(x, separators=(",", ":")) for x in bl.predictions(500, seed=4)]
    out: dict[str, dict[str, Any]] = {}
    for name, env in [("durable (default, synchronous=FULL)", {}),
                      ("before (EDGEBUF_DURABLE_ACK=false, NORMAL)",
                       {"EDGEBUF_DURABLE_ACK": "false"})]:  # fmt: skip
        bl.note(f"[durability] cloud ingest: {name}")
        server = CloudServer(bl.sqlite_url(tmp / f"cloud-{len(out)}.db"), env=env)
        try:
            server.start()
            assert server.process is not None
            out[name] = ci.run_load([server.url], [server.process.pid], args, True, texts)
        finally:
            server.close()
    return out


def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of logging per case")
    p.add_argument("--rate", type=float, default=440.0, help="camera rate, records/s")
    p.add_argument("--ingest-seconds", type=float, default=8.0, help="per cloud config")
    args = p.parse_args()
    if args.smoke:
        args.seconds, args.ingest_seconds = 0.5, 1.0
    preds = bl.predictions(500, seed=7)
    res: dict[str, Any] = {"edge": {}, "cloud": {}}
    # The scratch folder must be on a block device (tmpfs writes are not counted).
    scratch = Path(os.environ.get("EDGEBUF_BENCH_DIR", bl.REPO / "data"))
    scratch.mkdir(parents=True, exist_ok=True)
    with bl.scratch_dir() as tmp_cloud, _scratch(scratch) as tmp:
        with CloudServer(bl.sqlite_url(tmp_cloud / "sink.db")) as sink:
            for cloud_state, endpoint in [("down", f"http://127.0.0.1:{free_port()}"),
                                          ("up", sink.url)]:  # fmt: skip
                for rate_name, rate in [(f"{args.rate:g}/s", args.rate), ("flat out", 0.0)]:
                    for label, durability, sync, per_call in MODES:
                        key = f"cloud {cloud_state}, {rate_name}, {label}"
                        bl.note(f"[durability] {key}")
                        res["edge"][key] = run_edge(tmp, durability, sync, rate, args.seconds,
                                                    endpoint, preds, per_call)  # fmt: skip
        res["cloud"] = run_ingest(tmp_cloud, args.ingest_seconds, args.smoke)

    edge = bl.Table(
        f"edge — log_prediction and bytes written, {args.seconds:g} s per case",
        ["case", "records/s", "p50 µs", "p99 µs", "written B/rec", "JSON B/rec",
         "write ampl. ×", "GB/day at 440/s", "WAL syncs"],
        footer="written = /proc/self/io write_bytes of this process (page cache pages dirtied;"
               " journal excluded); p50/p99 are per call (x22: per call of 22 records)",
    )  # fmt: skip
    for key, r in res["edge"].items():
        edge.add(key, r["records_per_s"], r["p50_us"], r["p99_us"], r["bytes_per_record"],
                 r["json_bytes_per_record"], r["write_amplification"], r["gb_per_day_at_440"],
                 r["wal_syncs"])  # fmt: skip
    cloud = bl.Table(
        "cloud ingest — 1 SQLite replica, gzip, 32-record batches",
        ["configuration", "records/s", "× before", "p50 ms", "p99 ms", "errors"],
    )
    before = next(v for k, v in res["cloud"].items() if k.startswith("before"))
    for key, r in res["cloud"].items():
        cloud.add(key, r["records_per_s"], bl.ratio(r["records_per_s"], before["records_per_s"]),
                  r["p50_ms"], r["p99_ms"], r["errors"])  # fmt: skip
    targets = bl.Table("targets", ["target", "measured", "peer", "ratio", "wanted", "result"])
    checks = []
    for state in ("down", "up"):
        new = res["edge"][f"cloud {state}, {args.rate:g}/s, normal, sync 1 s"]
        old = res["edge"][f"cloud {state}, {args.rate:g}/s, normal, before"]
        r = bl.ratio(new["p99_us"], old["p99_us"])
        ok = r is not None and r <= 1.5
        targets.add(f"p99 at {args.rate:g}/s, cloud {state}: sync 1 s vs before", new["p99_us"],
                    old["p99_us"], r, "≤ 1.5×", bl.verdict(ok))  # fmt: skip
        checks.append({"target": f"p99 sync vs before, cloud {state}", "ratio": r, "pass": ok})
    durable = next(v for k, v in res["cloud"].items() if k.startswith("durable"))
    r = bl.ratio(durable["records_per_s"], before["records_per_s"])
    ok = r is not None and r >= 0.8
    targets.add("cloud records/s: durable vs before", durable["records_per_s"],
                before["records_per_s"], r, "≥ 0.8×", bl.verdict(ok))  # fmt: skip
    checks.append({"target": "cloud durable vs before", "ratio": r, "pass": ok})
    res["targets"] = checks
    bl.report("durability", [edge, cloud, targets], res, args.json)


class _scratch:
    """A temporary folder under ``base`` (on a real disk, unlike a tmpfs /tmp)."""

    def __init__(self, base: Path) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="edgebuf-durability-", dir=base)

    def __enter__(self) -> Path:
        return Path(self._tmp.name)

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()


if __name__ == "__main__":
    main()
