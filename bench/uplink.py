"""Uplink: a backlog drained over a factory uplink (a few Mbit/s, 50-600 ms), before and after.

    python bench/uplink.py [--records 100000] [--mbits 1,5,20] [--rtts 50,150,600]
    python bench/uplink.py --smoke        # one small cell, seconds

1. A buffer file with ``--records`` pending records is built quickly, as ``bench/drain.py``
   does (``drain.build_backlog``: bulk ``log_predictions``, client never started).
2. Compression, offline: the backlog's own rows as ``POST /log`` bodies of 512 records;
   bytes/record and edge CPU µs/record (``time.process_time`` over compressing every body,
   best of 3) for none, gzip level 1 (the old default), zstd levels 1 and 3.
3. The grid: per link (bandwidth × round trip) and per lane, the real cloud (``python -m
   cloud``, SQLite, a fresh file) behind a ``FaultProxy`` in ``link`` mode (one token bucket
   per direction shared by every connection, the round trip added per exchange), and a
   client in a child process (``drain.edgebuf_drain``) that drains the backlog while
   logging ``--live-rate`` new records/s. Lanes: ``before`` = the edge client of
   ``--before-ref`` (the commit before adaptive concurrency and zstd: gzip, waves of 2
   backlog requests), its child run from ``git archive`` of that commit, so the issue's
   "before" is measured in the same run, not remembered; ``fixed2`` = this code pinned to
   the old figures (``EDGEBUF_COMPRESSION=gzip``, ``EDGEBUF_DRAIN_CONCURRENCY=2``,
   ``EDGEBUF_DRAIN_ADAPTIVE=false``); ``after`` = today's defaults (zstd, adaptive
   concurrency up to 32).
4. Per cell: records/s of the backlog, and the link's limit for the bytes actually on the
   wire: bandwidth / (``POST /log`` bytes the proxy carried edge -> cloud, heads included,
   / records those requests carried); their ratio; requests in flight (mean and peak, from
   the proxy's request log); the latency of the live records logged during the drain
   (cloud ``received_at`` minus the record's ``timestamp``) against 2× the batch timeout.
5. The same drain with no link (loopback) per lane: the cloud's and the edge's own ceiling
   in this run, which a fast link cannot beat.

Targets: ≥ 0.8× the link limit in every cell; live records within 2× the batch timeout.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import benchlib as bl
import drain
import zstandard

from edgebuf.lab.faults import FaultProxy, mbit

BATCH = 512  # the client's backfill batch
BEFORE_REF = "32cf23e"  # the last commit with the fixed lane of 2 and gzip only
LANES: dict[str, dict[str, str]] = {
    "before": {"EDGEBUF_DRAIN_CONCURRENCY": "2"},  # + PYTHONPATH of the old code
    "fixed2": {
        "EDGEBUF_COMPRESSION": "gzip",
        "EDGEBUF_DRAIN_CONCURRENCY": "2",
        "EDGEBUF_DRAIN_ADAPTIVE": "false",
    },
    "after": {},  # the defaults
}
LANE_TEXT = {
    "before": "the client of {ref} (gzip, waves of 2 in flight)",
    "fixed2": "this client, gzip, a window of exactly 2",
    "after": "this client's defaults (zstd, adaptive window up to 32)",
}


def old_code(ref: str, into: Path) -> Path:
    """The repository at ``ref`` (``git archive``), for the ``before`` lane's child."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(bl.REPO), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# ---------------------------------------------------------------------- compression
def backlog_bodies(buffer: Path, limit: int) -> list[bytes]:
    """Up to ``limit`` records of the backlog as ``POST /log`` bodies of ``BATCH`` records."""
    ro = sqlite3.connect(f"file:{buffer}?mode=ro", uri=True)
    rows = ro.execute(
        "SELECT record_id, seq, image_id, timestamp, model_version, prediction_data"
        " FROM prediction_buffer ORDER BY id LIMIT ?",
        (limit,),
    ).fetchall()
    ro.close()
    bodies = []
    for start in range(0, len(rows), BATCH):
        items = ",".join(
            f'{{"record_id":"{r[0]}","seq":{r[1]},"image_id":"{r[2]}","timestamp":{r[3]!r},'
            f'"model_version":"{r[4]}","prediction":{r[5]}}}'
            for r in rows[start : start + BATCH]
        )
        bodies.append(
            f'{{"device_id":"{drain.DEVICE}","batch_id":"{uuid.uuid4().hex}",'
            f'"records":[{items}]}}'.encode()
        )
    return bodies


def compression_figures(bodies: list[bytes], records: int) -> list[dict[str, Any]]:
    codecs = {
        "none": lambda b: b,
        "gzip level 1 (before)": lambda b: gzip.compress(b, compresslevel=1),
        "zstd level 1 (after)": zstandard.ZstdCompressor(level=1).compress,
        "zstd level 3": zstandard.ZstdCompressor(level=3).compress,
    }
    out = []
    for name, codec in codecs.items():
        best = float("inf")
        size = 0
        for _ in range(3):
            t0 = time.process_time()
            size = sum(len(codec(b)) for b in bodies)
            best = min(best, time.process_time() - t0)
        out.append(
            {
                "codec": name,
                "bytes_per_record": size / records,
                "cpu_us_per_record": best / records * 1e6,
            }
        )
    return out


# ---------------------------------------------------------------------- one drain
@contextmanager
def lane_env(lane: str):
    saved = {k: os.environ.get(k) for k in LANES[lane]}
    os.environ.update(LANES[lane])
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def in_flight(posts: list[dict]) -> tuple[float, int]:
    """Mean and peak ``POST /log`` requests open at the proxy over the drain."""
    spans = [(r["t"], r.get("t_done", r["t"])) for r in posts]
    if not spans:
        return 0.0, 0
    begin, end = min(s for s, _ in spans), max(e for _, e in spans)
    mean = sum(e - s for s, e in spans) / max(end - begin, 1e-9)
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return mean, peak


def run_cell(
    backlog_path: Path,
    backlog: dict[str, Any],
    tmp: Path,
    lane: str,
    mbits: float | None,
    rtt_ms: float,
    live_rate: float,
) -> dict[str, Any]:
    buffer = tmp / f"edge-{uuid.uuid4().hex[:8]}.db"  # a fresh name: no stale -wal applies
    shutil.copyfile(backlog_path, buffer)
    bandwidth = mbit(mbits) if mbits else 0.0
    wire_s = backlog["records"] * 150 / bandwidth if bandwidth else 60.0
    timeout = 120.0 + 4 * wire_s
    label = f"{mbits:g} Mbit/s, {rtt_ms:g} ms" if mbits else "no link (loopback)"
    bl.note(f"[uplink] {lane}: {label}")
    try:
        with drain.cloud_server(bl.sqlite_url(tmp / f"cloud-{uuid.uuid4().hex[:8]}.db")) as cloud:
            with FaultProxy(cloud.url, upstream_timeout=120) as proxy:
                if mbits:
                    proxy.link(bandwidth_bps=bandwidth, rtt=rtt_ms / 1000)
                hop = SimpleNamespace(url=proxy.url, process=cloud.process)
                with lane_env(lane):
                    result = drain.edgebuf_drain(buffer, hop, backlog, tmp, live_rate, timeout)
                posts = proxy.log_requests()
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{buffer}{suffix}").unlink(missing_ok=True)
    carried = sum(r.get("accepted", 0) + r.get("duplicates", 0) for r in posts)
    up = sum(r.get("bytes_up", 0) for r in posts)
    bpr = up / carried if carried else float("nan")
    mean_flight, peak_flight = in_flight(posts)
    limit = bandwidth / bpr if bandwidth and carried else None
    bl.note(
        f"[uplink]   {lane}, {label}: {result['records_per_s']:,.0f} records/s,"
        f" {bpr:.1f} B/record on the wire, limit {limit or float('nan'):,.0f}/s,"
        f" peak {mean_flight:.1f}/{in_flight(posts)[1]} in flight,"
        f" live max {result['cloud_latency_max_s']:.2f} s"
    )
    return {
        "lane": lane,
        "link": label,
        "mbits": mbits,
        "rtt_ms": rtt_ms,
        "records_per_s": result["records_per_s"],
        "wire_bytes_per_record": bpr,
        "link_limit_records_per_s": limit,
        "ratio": bl.ratio(result["records_per_s"], limit),
        "mean_in_flight": mean_flight,
        "peak_in_flight": peak_flight,
        "log_requests": len(posts),
        "drain": result,
    }


# ---------------------------------------------------------------------- main
def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--records", type=int, default=100_000, help="backlog size")
    p.add_argument("--mbits", default="1,5,20", help="link bandwidths, Mbit/s")
    p.add_argument("--rtts", default="50,150,600", help="round trips, ms")
    p.add_argument(
        "--lanes", default="before,after", help=f"which lanes to run, of {', '.join(LANES)}"
    )
    p.add_argument(
        "--before-ref", default=BEFORE_REF, help="git commit whose client is the 'before' lane"
    )
    p.add_argument(
        "--live-rate",
        type=float,
        default=20.0,
        help="new records/s the client logs while it drains",
    )
    p.add_argument("--no-loopback", action="store_true", help="skip the no-link rows")
    args = p.parse_args()
    if args.smoke:
        args.records, args.mbits, args.rtts, args.no_loopback = 3_000, "20", "50", True
        args.lanes = "fixed2,after"  # no dependence on the repository's history
    mbits = [float(x) for x in args.mbits.split(",")]
    rtts = [float(x) for x in args.rtts.split(",")]
    lanes = [x for x in args.lanes.split(",") if x]
    unknown = set(lanes) - set(LANES)
    if unknown:
        p.error(f"unknown lanes {sorted(unknown)}; use {', '.join(LANES)}")

    cells: list[dict[str, Any]] = []
    with bl.scratch_dir() as tmp:
        backlog_path = tmp / "backlog.db"
        bl.note(f"[uplink] building a backlog of {args.records:,} records")
        backlog = drain.build_backlog(backlog_path, args.records)
        if "before" in lanes:
            try:
                old = old_code(args.before_ref, tmp / "before-code")
            except (OSError, subprocess.CalledProcessError) as exc:  # a shallow clone
                bl.note(f"[uplink] no {args.before_ref} to run ({exc}): 'fixed2' instead")
                lanes = [("fixed2" if x == "before" else x) for x in lanes]
            else:
                # the child of drain.py runs the old client: its edgebuf first on the path
                LANES["before"]["PYTHONPATH"] = os.pathsep.join(
                    [str(old), *filter(None, [os.environ.get("PYTHONPATH")])]
                )
        n = backlog["records"]
        sample = min(n, 50_000)
        codecs = compression_figures(backlog_bodies(backlog_path, sample), sample)
        for lane in lanes:
            if not args.no_loopback:
                cells.append(run_cell(backlog_path, backlog, tmp, lane, None, 0.0, args.live_rate))
            for bw in mbits:
                for rtt in rtts:
                    cells.append(
                        run_cell(backlog_path, backlog, tmp, lane, bw, rtt, args.live_rate)
                    )

    comp = bl.Table(
        f"compression of the backlog's own {BATCH}-record bodies ({sample:,} records)",
        ["codec", "bytes/record", "vs gzip", "edge CPU µs/record", "vs gzip"],
    )
    gz = next(c for c in codecs if c["codec"].startswith("gzip"))
    for c in codecs:
        comp.add(
            c["codec"],
            c["bytes_per_record"],
            bl.ratio(c["bytes_per_record"], gz["bytes_per_record"]),
            c["cpu_us_per_record"],
            bl.ratio(c["cpu_us_per_record"], gz["cpu_us_per_record"]),
        )

    limit_2x = 2 * drain.BATCH_TIMEOUT
    grid = bl.Table(
        f"drain of a {n:,}-record backlog to the real cloud (SQLite) through a link,"
        f" {args.live_rate:g} live records/s meanwhile",
        [
            "link",
            "lane",
            "records/s",
            "wire B/record",
            "link limit rec/s",
            "ratio",
            "vs ceiling",
            "in flight mean",
            "peak",
            "live p50 s",
            "live p99 s",
            "live max s",
        ],
        footer="lanes: "
        + "; ".join(f"{lane} = {LANE_TEXT[lane].format(ref=args.before_ref)}" for lane in lanes)
        + "."
        " The link limit is bandwidth / the POST /log bytes per record the proxy"
        " carried (heads included). vs ceiling: records/s / the lower of the link"
        " limit and the same lane's no-link drain in this run (this machine's own"
        " ceiling: cloud, proxy and edge share its CPUs).",
    )
    loopback = {c["lane"]: c["records_per_s"] for c in cells if not c["mbits"]}
    for c in cells:
        limits = [x for x in (c["link_limit_records_per_s"], loopback.get(c["lane"])) if x]
        c["ceiling_records_per_s"] = min(limits) if limits else None
        c["vs_ceiling"] = bl.ratio(c["records_per_s"], c["ceiling_records_per_s"])
    for c in sorted(cells, key=lambda c: (c["mbits"] or 1e9, c["rtt_ms"], c["lane"])):
        d = c["drain"]
        grid.add(
            c["link"],
            c["lane"],
            c["records_per_s"],
            c["wire_bytes_per_record"],
            c["link_limit_records_per_s"],
            c["ratio"],
            c["vs_ceiling"],
            c["mean_in_flight"],
            c["peak_in_flight"],
            d["cloud_latency_p50_s"],
            d["cloud_latency_p99_s"],
            d["cloud_latency_max_s"],
        )

    targets = bl.Table("targets", ["target", "measured", "limit", "ratio", "wanted", "result"])
    checks: list[dict[str, Any]] = []

    def check(label: str, mine: Any, limit: Any, wanted: str, ok: bool | None) -> None:
        r = bl.ratio(mine, limit)
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

    for c in cells:
        d = c["drain"]
        name = f"{c['lane']}, {c['link']}"
        stored_ok = d["cloud_stored"] == d["expected"] and d["drained"]
        if c["link_limit_records_per_s"] is not None:
            check(
                f"{name}: records/s vs link limit",
                c["records_per_s"],
                c["link_limit_records_per_s"],
                "≥ 0.8×",
                c["ratio"] >= 0.8,
            )
        worst = d["cloud_latency_max_s"]
        check(
            f"{name}: live max latency s",
            worst,
            limit_2x,
            "≤ 2× batch timeout",
            None if worst != worst else worst <= limit_2x,
        )
        check(
            f"{name}: stored exactly once",
            d["cloud_stored"],
            d["expected"],
            "= expected",
            stored_ok,
        )

    facts = bl.Table("notes", ["fact", "value"])
    facts.add("backlog build, records/s", backlog["build_records_per_s"])
    facts.add("batch timeout (live lane), s", drain.BATCH_TIMEOUT)
    results = {
        "records": n,
        "compression": codecs,
        "cells": cells,
        "targets": checks,
        "backlog": backlog,
        "before_ref": args.before_ref,
    }
    bl.report("uplink", [comp, grid, targets, facts], results, args.json)


if __name__ == "__main__":
    main()
