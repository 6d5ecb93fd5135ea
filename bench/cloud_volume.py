"""Cloud at volume: read endpoints and ingest at 1 M and 10 M stored records (and more).

    python bench/cloud_volume.py [--sizes 1,10] [--devices 20] [--backends postgresql,sqlite]
                                 [--reads 15] [--ingest-batches 120] [--batch 256]

A site of ``--devices`` cameras at 22 fps, filled fast into the service's own schema:
``generate_series`` on PostgreSQL, ``executemany`` on SQLite, with ~430-byte YOLO
predictions (eight templates), a model version (NULL every 500th record), a gap of five
seqs every 100,000 records, and the per-second detection totals; then the rollups and the
seq state come from ``cloud.rollups.rebuild`` (the SQL recount that
tests/cloud/test_cloud_volume_fill.py proves equal to what ingest through ``POST /log``
produces for the same records). At each size a real ``python -m cloud`` serves:

- every read endpoint, each timed ``--reads`` times over HTTP (median): ``GET /stats``,
  ``/stats?device_id=`` (1/devices of the rows), ``/stats?since=&until=`` (a 60 s window
  whose bounds cut minutes and seconds), ``/devices/{id}/gaps``, ``/devices/{id}/watermark``;
- ingest: ``--ingest-batches`` batches of ``--batch`` new records from 4 devices at once
  (continuing their seqs and timestamps), records/s, median of ``--rounds`` rounds, each
  followed by the same into a (nearly) empty database of the same backend whose server
  runs all along, so both see the same machine load;
- the peer: one full scan of the rows (``SELECT count(*), min(ts), max(ts) ...``, the
  first of the queries /stats ran before the rollups), timed once per size.

Targets (issue 13): on PostgreSQL every read <= 100 ms at 10 M rows; per read the
10 M / 1 M ratio <= 1.5 on both backends; ingest at 10 M >= 0.9x ingest into an empty
table. Storage per size is printed, and at the largest size where it goes
(`volume_storage`: per table and index, partitions summed, and the average width of a
row and of its columns; the retention test shows storage flat over 3N days).
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import benchlib as bl
import httpx
import volume_storage
from pydantic_core import to_json
from sqlalchemy import text

from cloud import migrate
from cloud.db import create_db_engine
from cloud.ingest import count_classes
from cloud.maintenance import Maintenance
from cloud.rollups import rebuild
from cloud.settings import CloudSettings
from cloud.testing import CloudServer

FPS = 22
GAP_EVERY, GAP = 100_000, 5
TEMPLATES = 8
MODEL = "yolov8n-factory-1"


# ---------------------------------------------------------------------- the records
def templates() -> list[str]:
    """Eight YOLO-like predictions as the service stores them (pydantic-core JSON)."""
    return [to_json(p).decode() for p in bl.predictions(TEMPLATES, seed=13)]


def device_name(index: int) -> str:
    return f"dev-{index:02d}"


def seq_of(k: int) -> int:
    return k + 1 + GAP * (k // GAP_EVERY)


def ts_of(base: float, index: int, k: int) -> float:
    return base + k / FPS + index * 0.001


def record_id(index: int, k: int) -> str:
    return hashlib.md5(f"{device_name(index)}:{k}".encode()).hexdigest()


def wire_record(base: float, index: int, k: int, texts: list[str]) -> str:
    """Record k of device `index` as JSON text in the wire format."""
    seq = seq_of(k)
    version = "null" if k % 500 == 0 else f'"{MODEL}"'
    return (
        f'{{"record_id":"{record_id(index, k)}","seq":{seq},'
        f'"image_id":"frame-{k:08d}","timestamp":{ts_of(base, index, k)!r},'
        f'"model_version":{version},"prediction":{texts[seq % TEMPLATES]}}}'
    )


def _row(base: float, index: int, k: int, texts: list[str]) -> tuple[Any, ...]:
    seq = seq_of(k)
    ts = ts_of(base, index, k)
    return (
        device_name(index),
        record_id(index, k),
        seq,
        f"frame-{k:08d}",
        ts,
        None if k % 500 == 0 else MODEL,
        texts[seq % TEMPLATES],
        ts + 0.5,
        f"fill-{k // 512}",
    )


# ---------------------------------------------------------------------- the fill
def _pg_drop_indexes(conn: Any) -> list[str]:
    """Drop the primary key and indexes of `predictions`; return the DDL that rebuilds them.

    Kept up to date row by row, the random-keyed primary key (device_id, record_id, ts)
    outgrows shared_buffers within a few million rows, and every insert then reads and
    dirties a random leaf page (full-page images in the WAL after each checkpoint): that
    was most of a 22-minute 10 M fill. Built once after the insert, each index is a sort.
    The DDL is PostgreSQL's own definition of each (pg_get_constraintdef/indexdef of the
    partitioned parent), so the partitions get the same indexes with the same names as the
    migrations give them (tests/cloud/test_cloud_volume_fill.py compares them), and a
    duplicate key among the filled rows still fails the primary key.
    """
    conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
    conn.execute(text("SET LOCAL max_parallel_maintenance_workers = 0"))  # shared cores
    keys = conn.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'predictions'::regclass AND contype = 'p'"
        )
    ).all()
    indexes = conn.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index x"
            " JOIN pg_class c ON c.oid = x.indexrelid"
            " WHERE x.indrelid = 'predictions'::regclass AND NOT x.indisprimary"
            " ORDER BY c.relname"
        )
    ).all()
    rebuild = [f"ALTER TABLE predictions ADD CONSTRAINT {name} {ddl}" for name, ddl in keys]
    # The parent's definition says ON ONLY (the parent alone); without it the index
    # cascades to every partition, as the migration's CREATE INDEX did.
    rebuild += [ddl.replace(" ON ONLY ", " ON ", 1) for _, ddl in indexes]
    for name, _ in keys:
        conn.execute(text(f"ALTER TABLE predictions DROP CONSTRAINT {name}"))
    for name, _ in indexes:
        conn.execute(text(f"DROP INDEX {name}"))
    return rebuild


def _pg_fill(conn: Any, base: float, devices: int, k0: int, k1: int, texts: list[str]) -> None:
    conn.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS bench_templates"
            " (idx int PRIMARY KEY, body text NOT NULL)"
        )
    )
    conn.execute(
        text("CREATE TEMP TABLE IF NOT EXISTS bench_classes (idx int, class_name text, n int)")
    )
    conn.execute(text("TRUNCATE bench_templates, bench_classes"))
    conn.execute(
        text("INSERT INTO bench_templates VALUES (:i, :b)"),
        [{"i": i, "b": body} for i, body in enumerate(texts)],
    )
    import json

    conn.execute(
        text("INSERT INTO bench_classes VALUES (:i, :c, :n)"),
        [
            {"i": i, "c": name, "n": n}
            for i, body in enumerate(texts)
            for name, n in count_classes(json.loads(body)).items()
        ],
    )
    source = (
        " FROM generate_series(CAST(:k0 AS bigint), CAST(:k1 AS bigint) - 1) AS g(k)"
        " CROSS JOIN generate_series(0, :devices - 1) AS d(i)"
        " CROSS JOIN LATERAL (SELECT 'dev-' || lpad(d.i::text, 2, '0') AS name,"
        "  g.k + 1 + :gap * (g.k / :every) AS seq,"
        "  CAST(:base AS float8) + g.k::float8 / CAST(:fps AS float8)"
        "  + d.i::float8 * CAST(0.001 AS float8) AS ts) AS v"
    )
    params = {
        "k0": k0,
        "k1": k1,
        "devices": devices,
        "gap": GAP,
        "every": GAP_EVERY,
        "base": base,
        "fps": FPS,
    }
    rebuild_indexes = _pg_drop_indexes(conn)
    conn.execute(
        text(
            "INSERT INTO predictions (device_id, record_id, seq, image_id, ts, model_version,"
            " prediction, received_at, batch_id)"
            " SELECT v.name, md5(v.name || ':' || g.k), v.seq, 'frame-' || lpad(g.k::text, 8, '0'),"
            " v.ts, CASE WHEN g.k % 500 = 0 THEN NULL ELSE :model END, t.body, v.ts + 0.5,"
            " 'fill-' || (g.k / 512)" + source + " JOIN bench_templates t ON t.idx = v.seq % 8"
        ),
        {**params, "model": MODEL},
    )
    for statement in rebuild_indexes:
        conn.execute(text(statement))
    conn.execute(
        text(
            "INSERT INTO detection_counts (device_id, bucket, class_name, n)"
            " SELECT v.name, floor(v.ts), c.class_name, sum(c.n)"
            + source
            + " JOIN bench_classes c ON c.idx = v.seq % 8 GROUP BY 1, 2, 3"
            " ON CONFLICT (device_id, bucket, class_name)"
            " DO UPDATE SET n = detection_counts.n + excluded.n"
        ),
        params,
    )


def _sqlite_fill(conn: Any, base: float, devices: int, k0: int, k1: int, texts: list[str]) -> None:
    import json
    import math

    classes = [count_classes(json.loads(body)) for body in texts]
    driver = conn.connection.driver_connection
    insert = (
        "INSERT INTO predictions (device_id, record_id, seq, image_id, ts, model_version,"
        " prediction, received_at, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    totals: dict[tuple[str, float, str], int] = {}
    step = 20_000
    for start in range(k0, k1, step):
        rows = [
            _row(base, i, k, texts)
            for k in range(start, min(k1, start + step))
            for i in range(devices)
        ]
        driver.executemany(insert, rows)
        for row in rows:
            second = float(math.floor(row[4]))
            for name, n in classes[row[2] % TEMPLATES].items():
                key = (row[0], second, name)
                totals[key] = totals.get(key, 0) + n
    driver.executemany(
        "INSERT INTO detection_counts (device_id, bucket, class_name, n) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device_id, bucket, class_name) DO UPDATE SET n = n + excluded.n",
        [(*key, n) for key, n in totals.items()],
    )


def fill(url: str, base: float, devices: int, k0: int, k1: int) -> float:
    """Add records k0..k1-1 of every device, then recount the derived tables; seconds."""
    started = time.perf_counter()
    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        migrate.upgrade(engine)
        texts = templates()
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                _pg_fill(conn, base, devices, k0, k1, texts)
            else:
                _sqlite_fill(conn, base, devices, k0, k1, texts)
            rebuild(conn)
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            else:
                conn.execute(text("ANALYZE"))
                conn.commit()
    finally:
        engine.dispose()
    return time.perf_counter() - started


def prepare(url: str, base: float) -> None:
    """Schema and the day partitions the fill's timestamps need (the service's own code)."""
    from cloud.db import Database

    settings = CloudSettings(database_url=url)
    engine = create_db_engine(settings)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    db = Database(settings)
    try:
        Maintenance(db, settings).run_once(base)
        Maintenance(db, settings).run_once(time.time())
    finally:
        db.dispose()


# ---------------------------------------------------------------------- measuring
def storage_bytes(url: str) -> int:
    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                return bl.file_bytes(Path(engine.url.database or ""))
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
    finally:
        engine.dispose()


def full_scan_seconds(url: str) -> float:
    engine = create_db_engine(CloudSettings(database_url=url))
    try:
        with engine.connect() as conn:
            started = time.perf_counter()
            conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT device_id), min(ts), max(ts),"
                    " max(received_at) FROM predictions"
                )
            ).one()
            return time.perf_counter() - started
    finally:
        engine.dispose()


def time_reads(
    server: CloudServer, base: float, span: float, device: str, repeat: int
) -> dict[str, float]:
    since = base + span / 2 + 17.3  # cuts a minute and a second on both sides
    reads = {
        "/stats": ("/stats", {}),
        "/stats?device_id=": ("/stats", {"device_id": device}),
        "/stats?since=&until= (60 s)": ("/stats", {"since": since, "until": since + 60}),
        "/devices/{id}/gaps": (f"/devices/{device}/gaps", {}),
        "/devices/{id}/watermark": (f"/devices/{device}/watermark", {}),
    }
    out: dict[str, float] = {}
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for name, (path, params) in reads.items():
            for _ in range(2):
                assert client.get(path, params=params).status_code == 200
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                answer = client.get(path, params=params)
                samples.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
            out[name] = statistics.median(samples)
    return out


def time_ingest(server: CloudServer, base: float, k0: int, batches: int, batch: int) -> float:
    """Records/s of `batches` new batches from 4 devices at once, continuing at k0."""
    texts = templates()
    per_device = batches // 4
    bodies: list[list[bytes]] = []
    for index in range(4):
        device = []
        for b in range(per_device):
            start = k0 + b * batch
            records = ",".join(
                wire_record(base, index, k, texts) for k in range(start, start + batch)
            )
            device.append(
                (
                    f'{{"device_id":"{device_name(index)}","batch_id":"ing-{index}-{b}-'
                    f'{k0}","records":[{records}]}}'
                ).encode()
            )
        bodies.append(device)
    barrier = threading.Barrier(5)
    errors: list[str] = []

    def post(device: list[bytes]) -> None:
        with httpx.Client(
            base_url=server.url, timeout=60, headers={"content-type": "application/json"}
        ) as client:
            barrier.wait()
            for body in device:
                answer = client.post("/log", content=body)
                if answer.status_code != 200 or answer.json()["accepted"] != batch:
                    errors.append(answer.text[:200])

    threads = [threading.Thread(target=post, args=(device,)) for device in bodies]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"ingest failed: {errors[:3]}")
    return 4 * per_device * batch / elapsed


@contextlib.contextmanager
def database(backend: str, scratch: Path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield bl.sqlite_url(scratch / f"{name}.db")
        return
    with bl.fresh_postgres_database() as url:
        yield url


# ---------------------------------------------------------------------- the run
def run_backend(backend: str, sizes: list[int], args: Any, scratch: Path) -> dict[str, Any]:
    devices = args.devices
    per_round = (args.ingest_batches // 4) * args.batch  # records per ingesting device
    extra = args.rounds * per_round * len(sizes)
    span_max = (max(sizes) // devices + extra) / FPS
    base = (time.time() - span_max - 3600) // 60 * 60  # everything in the recent past
    result: dict[str, Any] = {"sizes": {}}
    with (
        database(backend, scratch, "empty") as empty_url,
        database(backend, scratch, "volume") as url,
    ):
        prepare(empty_url, base)
        prepare(url, base)
        k = empty_k = 0
        with CloudServer(empty_url) as empty_server:
            for size in sizes:
                target_k = max(k, size // devices)
                bl.note(f"{backend}: filling to {size:,} rows ...")
                seconds = fill(url, base, devices, k, target_k)
                k = target_k
                bl.note(f"{backend}: {size:,} rows in {seconds:.0f} s; measuring")
                row: dict[str, Any] = {
                    "fill_s": seconds,
                    "storage_bytes": storage_bytes(url),
                    "storage": volume_storage.breakdown(url),
                    "row_widths": volume_storage.row_widths(url),
                    "full_scan_s": full_scan_seconds(url),
                }
                with CloudServer(url, ready_timeout=120) as server:
                    row["reads"] = time_reads(
                        server, base, k / FPS, device_name(devices // 2), args.reads
                    )
                    full, empty = [], []
                    # A fresh server's pool has no prepared statements yet: warm both up.
                    time_ingest(server, base, k, 8, args.batch)
                    k += 2 * args.batch
                    time_ingest(empty_server, base, empty_k, 8, args.batch)
                    empty_k += 2 * args.batch
                    for _ in range(args.rounds):  # interleaved: the same machine load
                        full.append(time_ingest(server, base, k, args.ingest_batches, args.batch))
                        k += per_round
                        empty.append(
                            time_ingest(
                                empty_server, base, empty_k, args.ingest_batches, args.batch
                            )
                        )
                        empty_k += per_round
                row["ingest"] = statistics.median(full)
                row["ingest_empty"] = statistics.median(empty)
                row["ingest_runs"], row["ingest_empty_runs"] = full, empty
                result["sizes"][size] = row
    return result


def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--sizes", default="1,10", help="millions of rows, ascending")
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--backends", default="postgresql,sqlite")
    p.add_argument("--reads", type=int, default=15, help="timed calls per read endpoint")
    p.add_argument("--ingest-batches", type=int, default=120)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="ingest rounds per size, alternating with the empty database",
    )
    args = p.parse_args()
    if args.smoke:
        sizes = [10_000, 30_000]
        args.reads, args.ingest_batches, args.batch, args.rounds = 3, 8, 64, 1
    else:
        sizes = [int(float(s) * 1_000_000) for s in args.sizes.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    if "postgresql" in backends and not bl.postgres_reachable():
        bl.note("PostgreSQL not reachable at 127.0.0.1:5432: skipped")
        backends.remove("postgresql")

    results: dict[str, Any] = {}
    with bl.scratch_dir() as scratch:
        for backend in backends:
            results[backend] = run_backend(backend, sizes, args, scratch)

    small, large = sizes[0], sizes[-1]
    names = list(next(iter(results.values()))["sizes"][small]["reads"]) if results else []
    table = bl.Table(
        "read latency, median ms (HTTP, real server), and ingest records/s",
        ["backend", "rows", *names, "ingest rec/s", "full scan ms (peer)", "storage MB", "fill s"],
    )
    ratios = bl.Table(
        f"ratio {large:,} ÷ {small:,} rows", ["backend", *names, "ingest", "full scan (peer)"]
    )
    targets = bl.Table("targets", ["target", "measured", "peer", "ratio", "wanted", "result"])
    checks: dict[str, Any] = {}
    for backend, res in results.items():
        for size, row in res["sizes"].items():
            table.add(
                backend,
                size,
                *[row["reads"][n] * 1000 for n in names],
                row["ingest"],
                row["full_scan_s"] * 1000,
                row["storage_bytes"] / 1e6,
                row["fill_s"],
            )
        table.add(
            f"{backend} (empty, same time as {large:,})",
            0,
            *[None for _ in names],
            res["sizes"][large]["ingest_empty"],
            None,
            None,
            None,
        )
        lo, hi = res["sizes"][small], res["sizes"][large]
        ratios.add(
            backend,
            *[bl.ratio(hi["reads"][n], lo["reads"][n]) for n in names],
            bl.ratio(hi["ingest"], lo["ingest"]),
            bl.ratio(hi["full_scan_s"], lo["full_scan_s"]),
        )
        for n in names:
            r = bl.ratio(hi["reads"][n], lo["reads"][n])
            ok = r is not None and r <= 1.5
            checks[f"{backend} {n} flat"] = ok
            targets.add(
                f"{backend} {n}: {large:,} vs {small:,} rows",
                hi["reads"][n] * 1000,
                lo["reads"][n] * 1000,
                r,
                "≤ 1.5×",
                bl.verdict(ok),
            )
            if backend == "postgresql":
                ok = hi["reads"][n] <= 0.1
                checks[f"{backend} {n} <= 100 ms"] = ok
                targets.add(
                    f"{backend} {n} at {large:,} rows (ms)",
                    hi["reads"][n] * 1000,
                    None,
                    None,
                    "≤ 100 ms",
                    bl.verdict(ok),
                )
        r = bl.ratio(hi["ingest"], hi["ingest_empty"])
        ok = r is not None and r >= 0.9
        checks[f"{backend} ingest"] = ok
        targets.add(
            f"{backend} ingest at {large:,} rows vs empty (rec/s)",
            hi["ingest"],
            hi["ingest_empty"],
            r,
            "≥ 0.9×",
            bl.verdict(ok),
        )
    if not results:
        targets.add("no backend available", None, None, None, "—", "skipped")
    storage = bl.Table(
        f"storage at {large:,} rows: tables (partitions summed) and indexes",
        ["backend", "relation", "kind", "of table", "parts", "MB", "bytes per row"],
    )
    widths = bl.Table(
        f"average stored bytes of a predictions row and its columns at {large:,} rows",
        ["backend", "column", "bytes"],
    )
    for backend, res in results.items():
        hi = res["sizes"][large]
        for rel in hi["storage"]:
            if rel["bytes"] >= 1_000_000:
                storage.add(
                    backend,
                    rel["name"],
                    rel["kind"],
                    rel["of_table"],
                    rel["parts"],
                    rel["bytes"] / 1e6,
                    rel["bytes"] / large,
                )
        for column, width in hi["row_widths"].items():
            widths.add(backend, column, width)
    bl.report(
        "cloud_volume",
        [table, ratios, targets, storage, widths],
        {"results": results, "targets": checks, "sizes": sizes},
        args.json,
    )


if __name__ == "__main__":
    main()
