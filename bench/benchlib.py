"""What every edgebuf benchmark shares: payloads, statistics, the printed table, processes.

Not a benchmark itself. The scripts in this folder import it as a sibling module
(``python bench/<name>.py`` puts ``bench/`` first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

_LOAD_AT_START = os.getloadavg()

_CLASSES = ("scratch", "dent", "crack", "missing_screw", "person", "forklift", "pallet")


# ---------------------------------------------------------------------- payloads
def yolo_prediction(rng: random.Random) -> dict[str, Any]:
    """A realistic YOLO prediction: 3-5 detections, each a class, a confidence and a box."""
    detections = []
    for _ in range(rng.randint(3, 5)):
        x1, y1 = rng.uniform(0, 560), rng.uniform(0, 400)
        w, h = rng.uniform(8, 80), rng.uniform(8, 80)
        cls = rng.randrange(len(_CLASSES))
        detections.append(
            {
                "class_id": cls,
                "class_name": _CLASSES[cls],
                "confidence": round(rng.uniform(0.25, 0.99), 4),
                "box": [round(x1, 2), round(y1, 2), round(x1 + w, 2), round(y1 + h, 2)],
            }
        )
    return {
        "detections": detections,
        "image_size": [640, 480],
        "inference_ms": round(rng.uniform(6.0, 14.0), 2),
    }


def predictions(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` predictions, built before any timing starts."""
    rng = random.Random(seed)
    return [yolo_prediction(rng) for _ in range(n)]


def wire_records(
    preds: Sequence[dict[str, Any]], first_seq: int = 1, timestamp: float = 1_764_370_000.0
) -> list[dict[str, Any]]:
    """The same predictions as records of the cloud's ``POST /log`` body (unique ids)."""
    return [
        {
            "record_id": uuid.uuid4().hex,
            "seq": first_seq + i,
            "image_id": f"frame-{first_seq + i:08d}",
            "timestamp": timestamp + i * 0.033,
            "model_version": "yolov8n-factory-1",
            "prediction": p,
        }
        for i, p in enumerate(preds)
    ]


# ---------------------------------------------------------------------- statistics
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return float(sorted_values[int(min(rank, len(sorted_values))) - 1])


def latency_summary(ns: Sequence[int]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max in microseconds of per-call nanosecond samples."""
    s = sorted(ns)
    return {
        "p50_us": percentile(s, 50) / 1e3,
        "p99_us": percentile(s, 99) / 1e3,
        "p999_us": percentile(s, 99.9) / 1e3,
        "max_us": (s[-1] / 1e3) if s else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def median_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median of the numeric values over repeated runs (others: first run's)."""
    out: dict[str, Any] = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            mid = median([r[key] for r in runs])
            out[key] = round(mid) if isinstance(value, int) else mid
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


# ---------------------------------------------------------------------- output
def fmt(value: Any) -> str:
    """Numbers the way the tables print them: integers with separators, 3 significant."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "—"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


class Table:
    """A plain-text table, right-aligned numbers, printed with a title."""

    def __init__(self, title: str, headers: Sequence[str], footer: str = "") -> None:
        self.title = title
        self.headers = list(headers)
        self.footer = footer
        self.rows: list[list[str]] = []

    def add(self, *cells: Any) -> None:
        self.rows.append([fmt(c) for c in cells])

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row)]

        def line(cells: Sequence[str]) -> str:
            parts = [
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        body = [line(self.headers), rule, *(line(r) for r in self.rows)]
        return "\n".join([self.title, *body, *([self.footer] if self.footer else [])])


def command_line() -> str:
    """The command that reproduces this run, from the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return " ".join(["python", shlex.quote(str(script)), *map(shlex.quote, sys.argv[1:])])


def parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes: --smoke, --json, --repeat."""
    p = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, a few seconds: proves the script runs (used by the tests)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    return p


def report(
    name: str, tables: Sequence[Table], results: dict[str, Any], json_path: str | None
) -> None:
    """Print the tables and the reproducing command; write the JSON file if asked."""
    cmd = command_line()
    print()
    for table in tables:
        print(table.render())
        print()
    print(f"reproduce: {cmd}")
    load = " -> ".join(
        " ".join(f"{x:.2f}" for x in avg) for avg in (_LOAD_AT_START, os.getloadavg())
    )
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform};"
        f" load average 1/5/15 min, start -> end: {load} (others share this machine)"
    )
    if json_path:
        payload = {"benchmark": name, "command": cmd, "cpus": os.cpu_count(), **results}
        Path(json_path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"results written to {json_path}")
    sys.stdout.flush()


def note(message: str) -> None:
    """Progress on stderr, so stdout stays the tables."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- files and processes
@contextlib.contextmanager
def scratch_dir(prefix: str = "edgebuf-bench-") -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss_bytes(pid: int) -> int:
    return _proc_status(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    return _proc_status(pid, "VmHWM")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat`` utime + stime)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm, field 3 (state) is index 0, so utime (14) is index 11.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_bytes(path: Path) -> int:
    """Size of a SQLite file together with its -wal and -shm files, if present."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            total += p.stat().st_size
    return total


# ---------------------------------------------------------------------- PostgreSQL
def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN):
            return True
    except Exception:
        return False


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database ``edgebuf_bench_<hex>``; yields its SQLAlchemy URL, drops it after."""
    import psycopg

    name = f"edgebuf_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(name=name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
