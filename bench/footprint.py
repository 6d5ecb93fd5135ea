"""Footprint: what edgebuf costs an edge box when it is doing nothing, and per record on disk.

    python bench/footprint.py [--window 60] [--records 10000] [--import-runs 7]
                              [--core-venv DIR [--before REF]]

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
- Core-only install, before and after (``--core-venv DIR``): a virtualenv with nothing but
  ``pip install <repo>`` (no extras: no cloud service, detector or drill packages; built if
  missing), and in it ``import edgebuf`` (time, heavy packages loaded) and the idle client
  (RSS, CPU, in the same window as the rows above) for this tree and for ``--before REF``
  (default ``f9968e7``, the last commit before the reorganisation by layer), checked out in a
  temporary ``git worktree`` and put first on ``PYTHONPATH``; each child prints the
  ``edgebuf.__file__`` it imported, and the script refuses to report a row that imported
  the wrong tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as bl

MB = 1024 * 1024
BEFORE_REORGANISATION = "f9968e7"
# Top-level packages a camera's `import edgebuf` should not pay for.
HEAVY = ("pandas", "numpy", "matplotlib", "click", "httpx", "rich", "cloud")
# What issue 14 says `import edgebuf` must not load (the rest of HEAVY is reported only).
MUST_NOT_LOAD = ("pandas", "matplotlib", "click", "httpx", "cloud")
# Packages only the extras install: none may be importable in the core-only venv.
EXTRAS_ONLY = (
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "psycopg",
    "matplotlib",
    "ultralytics",
    "torch",
    "persistqueue",
    "pytest",
)
IDLE_PROGRAMS = {
    "bare python": "import sys, time\nprint('ready', flush=True)\ntime.sleep(1e6)\n",
    "persist-queue, open": (
        "import sys, time, persistqueue\n"
        "q = persistqueue.SQLiteAckQueue(sys.argv[1], auto_commit=True, multithreading=True)\n"
        "print('ready', flush=True)\ntime.sleep(1e6)\n"
    ),
}


# ---------------------------------------------------------------------- import time
def child_env(**extra: str) -> dict[str, str]:
    """Our environment for a measured child, but writing bytecode: with PYTHONDONTWRITEBYTECODE
    set (as on some dev boxes) every import of a source tree would compile it again, which an
    installed package never does (pip writes the .pyc files)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | extra


def _wall(
    code: str,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [python, "-c", code], check=True, env=child_env() if env is None else dict(env), cwd=cwd
    )
    return time.perf_counter() - t0


def import_times(runs: int) -> dict[str, float]:
    codes = {
        "bare": "pass",
        "edgebuf": "import edgebuf",
        "httpx": "import httpx",
        "persistqueue": "import persistqueue",
    }
    samples: dict[str, list[float]] = defaultdict(list)
    _wall("import edgebuf, httpx, persistqueue")  # warm the file cache and .pyc files
    for _ in range(runs):
        for name, code in codes.items():
            samples[name].append(_wall(code))
    bare = bl.median(samples["bare"])
    return {name: bl.median(s) - bare for name, s in samples.items() if name != "bare"} | {
        "bare": bare
    }


def import_breakdown(
    top: int | None = 6,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> list[tuple[str, float]]:
    """Self time of ``import edgebuf`` summed by top-level package, largest first (ms)."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import edgebuf"],
        check=True,
        capture_output=True,
        text=True,
        env=child_env() if env is None else dict(env),
        cwd=cwd,
    )
    by_package: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if m:
            by_package[m.group(2).split(".")[0]] += int(m.group(1)) / 1e3
    return sorted(by_package.items(), key=lambda kv: -kv[1])[:top]


# ---------------------------------------------------------------------- core-only install
_PROBE = """
import importlib.util, json, sys, time
t0 = time.perf_counter()
import edgebuf
took = time.perf_counter() - t0
print(json.dumps({
    "file": edgebuf.__file__, "in_process_s": took, "modules": len(sys.modules),
    "heavy": [n for n in sys.argv[1].split(",") if n in sys.modules],
    "extras_importable": [n for n in sys.argv[2].split(",")
                          if importlib.util.find_spec(n) is not None],
}))
"""


@dataclass(frozen=True)
class CoreSetup:
    """A core-only interpreter and the trees (label -> repository root) measured with it."""

    python: str
    trees: dict[str, Path]

    # Each child runs in its tree's root: ``python -c`` puts the working directory first on
    # sys.path, ahead of PYTHONPATH, so running it elsewhere could import another edgebuf.
    def env(self, tree: Path | None) -> dict[str, str]:
        """Our environment without anything that reaches the shared venv, ``tree`` first."""
        env = {
            k: v
            for k, v in child_env().items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        }
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        return env


def ensure_core_venv(venv: Path) -> str:
    """The interpreter of a virtualenv holding a core-only install (no extras) of this
    repository, built first if missing. Delete the folder to rebuild it after a change of
    dependencies (the code measured always comes from the trees on PYTHONPATH)."""
    python, built = venv / "bin" / "python", venv / ".edgebuf-core-install"
    if not built.exists():  # absent also when an earlier build was interrupted
        bl.note(f"[footprint] building a core-only virtualenv in {venv} (pip install, no extras)")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                str(bl.REPO),
            ],
            check=True,
        )
        built.write_text(f"pip install {bl.REPO} (no extras)\n")
    return str(python)


class GitError(RuntimeError):
    pass


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(bl.REPO), *args], capture_output=True, text=True)
    if done.returncode:
        raise GitError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def tree_label(ref: str | None) -> str:
    """A commit's short id; for this tree, HEAD's, marked when edgebuf/ has local changes."""
    if ref is not None:
        return _git("rev-parse", "--short", f"{ref}^{{commit}}")
    dirty = _git("status", "--porcelain", "--", "edgebuf", "pyproject.toml")
    return _git("rev-parse", "--short", "HEAD") + (" + changes" if dirty else "")


@contextlib.contextmanager
def detached_worktree(ref: str) -> Iterator[Path]:
    """``ref`` checked out in a temporary ``git worktree`` (removed afterwards, also on error)."""
    parent = Path(tempfile.mkdtemp(prefix="edgebuf-footprint-"))
    path = parent / "tree"
    try:
        _git("worktree", "add", "--detach", "--quiet", str(path), ref)
        yield path
    finally:
        try:
            if path.exists():
                _git("worktree", "remove", "--force", str(path))
        except GitError:  # drop the folder, then git's record of it
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(GitError):
                _git("worktree", "prune")
        shutil.rmtree(parent, ignore_errors=True)


def _probe(core: CoreSetup, tree: Path) -> dict[str, Any]:
    done = subprocess.run(
        [core.python, "-c", _PROBE, ",".join(HEAVY), ",".join(EXTRAS_ONLY)],
        check=True,
        capture_output=True,
        text=True,
        env=core.env(tree),
        cwd=tree,
    )
    info: dict[str, Any] = json.loads(done.stdout)
    if not _inside(info["file"], tree):
        raise RuntimeError(f"the core interpreter imported {info['file']}, not {tree}'s edgebuf")
    if info["extras_importable"]:
        raise RuntimeError(
            f"{core.python} is not a core-only install: "
            f"{', '.join(info['extras_importable'])} importable"
        )
    return info


def core_imports(core: CoreSetup, runs: int) -> dict[str, dict[str, Any]]:
    """Per tree: what ``import edgebuf`` loads (one probe) and its wall time in a fresh core
    interpreter minus a bare one with the same environment (medians of ``runs``, interleaved
    across trees), plus where the time goes by top-level package."""
    out = {label: _probe(core, tree) for label, tree in core.trees.items()}  # also warms .pyc
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(runs):
        for label, tree in core.trees.items():
            for code in ("pass", "import edgebuf"):
                samples[label, code].append(_wall(code, core.python, core.env(tree), tree))
    for label, tree in core.trees.items():
        bare = bl.median(samples[label, "pass"])
        out[label]["bare_s"] = bare
        out[label]["import_s"] = bl.median(samples[label, "import edgebuf"]) - bare
        out[label]["import_samples_s"] = samples[label, "import edgebuf"]
        out[label]["breakdown_ms"] = import_breakdown(
            top=None, python=core.python, env=core.env(tree), cwd=tree
        )
    return out


# ---------------------------------------------------------------------- idle processes
def idle_client_main(args: argparse.Namespace) -> None:
    import edgebuf
    from edgebuf import EnhancedAsyncLoggingClient

    client = EnhancedAsyncLoggingClient(args.endpoint, args.db, args.device)
    client.start()
    loaded = [n for n in HEAVY if n in sys.modules]
    print("ready", json.dumps({"file": edgebuf.__file__, "heavy": loaded}), flush=True)
    try:
        time.sleep(1e6)
    finally:
        client.close(timeout=2)


@dataclass(frozen=True)
class IdleSpec:
    """One idle process: its command line, environment (None: ours) and, for an edgebuf
    client, the tree whose ``edgebuf`` it must have imported."""

    argv: list[str]
    env: Mapping[str, str] | None = None
    expect_tree: Path | None = None
    cwd: Path | None = None


def launch_idle(spec: IdleSpec) -> subprocess.Popen:
    return subprocess.Popen(
        spec.argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=child_env() if spec.env is None else dict(spec.env),
        cwd=spec.cwd,
    )


def wait_ready(name: str, spec: IdleSpec, proc: subprocess.Popen) -> dict[str, Any]:
    """Wait for an idle process's ``ready`` line (an edgebuf client adds a JSON object: the
    ``edgebuf.__file__`` it imported and the heavy packages loaded once started)."""
    assert proc.stdout is not None
    word, _, rest = proc.stdout.readline().strip().partition(" ")
    info: dict[str, Any] = json.loads(rest) if word == "ready" and rest else {}
    problem = "" if word == "ready" else "did not start"
    imported = str(info.get("file", ""))
    if not problem and spec.expect_tree is not None and not _inside(imported, spec.expect_tree):
        problem = f"imported {imported or 'nothing'}, not the edgebuf of {spec.expect_tree}"
    if problem:
        raise RuntimeError(f"{name}: idle process {problem}")
    return info


def _inside(path: str, tree: Path) -> bool:
    return bool(path) and Path(path).resolve().is_relative_to(tree.resolve())


def _idle_client(
    python: str,
    tmp: Path,
    tag: str,
    endpoint: str,
    env: Mapping[str, str] | None = None,
    tree: Path | None = None,
) -> IdleSpec:
    me = str(Path(__file__).resolve())
    return IdleSpec(
        [
            python,
            me,
            "--idle-child",
            "--db",
            str(tmp / f"idle-{tag}.db"),
            "--endpoint",
            endpoint,
            "--device",
            f"bench-idle-{tag}",
        ],
        env,
        tree,
        tree,
    )


def idle_processes(
    tmp: Path, window: float, settle: float, core: CoreSetup | None = None
) -> dict[str, dict[str, Any]]:
    """Idle RSS and CPU of every process, all measured in the same window (the core-only
    before/after clients too, when ``core`` is given)."""
    from cloud.testing import CloudServer, free_port

    server = CloudServer(bl.sqlite_url(tmp / "cloud.db"))
    procs: dict[str, subprocess.Popen] = {}
    try:
        server.start()
        down = f"http://127.0.0.1:{free_port()}"
        specs = {
            "edgebuf client, started, cloud up": _idle_client(
                sys.executable, tmp, "up", server.url
            ),
            "edgebuf client, started, cloud down": _idle_client(sys.executable, tmp, "down", down),
            "bare python": IdleSpec([sys.executable, "-c", IDLE_PROGRAMS["bare python"]]),
            "persist-queue, open": IdleSpec(
                [sys.executable, "-c", IDLE_PROGRAMS["persist-queue, open"], str(tmp / "pq-idle")]
            ),
        }
        if core is not None:
            for label, tree in core.trees.items():
                for state, endpoint in (("up", server.url), ("down", down)):
                    specs[f"core {label}, cloud {state}"] = _idle_client(
                        core.python, tmp, f"core-{label}-{state}", endpoint, core.env(tree), tree
                    )
            specs["core bare python"] = IdleSpec(
                [core.python, "-c", IDLE_PROGRAMS["bare python"]],
                core.env(None),
                None,
                core.trees["after"],
            )
        started: dict[str, dict[str, Any]] = {}
        for name, spec in specs.items():  # all start at once, then each must say ready
            procs[name] = launch_idle(spec)
        for name, spec in specs.items():
            started[name] = wait_ready(name, spec, procs[name])
        time.sleep(settle)
        out: dict[str, dict[str, Any]] = {
            name: {"rss_bytes": bl.rss_bytes(p.pid), **started[name]} for name, p in procs.items()
        }
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
    p.add_argument(
        "--core-venv",
        metavar="DIR",
        type=Path,
        help="also measure import and idle client on a core-only install: this "
        "virtualenv (built if missing), for this tree and for --before",
    )
    p.add_argument(
        "--before",
        metavar="REF",
        default=BEFORE_REORGANISATION,
        help="the commit compared with this tree (with --core-venv)",
    )
    p.add_argument("--idle-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--device", default="bench-idle", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.idle_child:
        idle_client_main(args)
        return
    if args.smoke:
        args.window, args.settle, args.records, args.import_runs = 3.0, 1.0, 500, 2

    t_run = time.perf_counter()

    def note(message: str) -> None:
        bl.note(f"[footprint {time.perf_counter() - t_run:5.1f} s] {message}")

    core: CoreSetup | None = None
    core_imp: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if args.core_venv is not None:
            python = ensure_core_venv(args.core_venv.absolute())  # not resolve(): a venv's
            labels = {"before": tree_label(args.before), "after": tree_label(None)}  # symlink
            note(f"checking out {args.before} ({labels['before']}) in a temporary git worktree")
            before = stack.enter_context(detached_worktree(args.before))
            core = CoreSetup(python, {"before": before, "after": bl.REPO})
        note("import time")
        imports = import_times(args.import_runs)
        breakdown = import_breakdown()
        if core is not None:
            note("import time on the core-only install, before and after")
            core_imp = core_imports(core, args.import_runs)
        tmp = stack.enter_context(bl.scratch_dir())
        note(f"idle processes: {args.settle:g} s settle, {args.window:g} s window")
        idle = idle_processes(tmp, args.window, args.settle, core)
        note(f"disk bytes per record, {args.records:,} records")
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
        if name.startswith("core "):
            continue  # in the before/after table
        t_idle.add(
            name,
            r["rss_bytes"] / MB,
            bl.ratio(r["rss_bytes"], bare["rss_bytes"]),
            round(r["cpu_s"] * 1e3),
            f"{r['cpu_pct']:.3f}",
        )

    t_disk = bl.Table(
        f"disk bytes per record, {args.records:,} typical records (db + WAL)",
        ["store", "bytes/record", "× JSON payload", "× raw SQLite"],
    )
    rows = [
        ("JSON payload itself", disk["payload_bytes"]),
        ("raw SQLite table (id, json)", disk["raw_sqlite"]),
        ("persist-queue SQLiteAckQueue", disk["persist_queue"]),
        ("edgebuf, pending", disk["edgebuf_pending"]),
        ("edgebuf, sent, kept (no cleanup)", disk["edgebuf_sent_kept"]),
        (
            "edgebuf, after cleanup(0), whole file / records",
            disk["edgebuf_after_cleanup_total"] / args.records,
        ),
    ]
    for name, v in rows:
        t_disk.add(name, v, bl.ratio(v, disk["payload_bytes"]), bl.ratio(v, disk["raw_sqlite"]))

    targets = bl.Table("targets", ["target", "measured", "wanted", "result"])
    checks = []
    for name in ("edgebuf client, started, cloud up", "edgebuf client, started, cloud down"):
        pct = idle[name]["cpu_pct"]
        targets.add(
            f"idle CPU, {name.split(', ', 2)[2]}, % of a core",
            f"{pct:.3f}",
            "well under 1%",
            bl.verdict(pct < 1.0),
        )
        checks.append({"target": f"idle CPU {name}", "cpu_pct": pct, "pass": pct < 1.0})
    tables = [t_imp, t_where, t_idle, t_disk]
    if core is not None:
        tables += core_tables(args, core, core_imp, idle, labels)
        loaded = [n for n in core_imp["after"]["heavy"] if n in MUST_NOT_LOAD]
        targets.add(
            "core install: `import edgebuf` loads " + ", ".join(MUST_NOT_LOAD),
            ", ".join(loaded) or "none",
            "none",
            bl.verdict(not loaded),
        )
        checks.append(
            {"target": "core import loads no heavy package", "loaded": loaded, "pass": not loaded}
        )
        for state in ("up", "down"):
            pct = idle[f"core after, cloud {state}"]["cpu_pct"]
            targets.add(
                f"core install: idle CPU, cloud {state}, % of a core",
                f"{pct:.3f}",
                "well under 1%",
                bl.verdict(pct < 1.0),
            )
            checks.append(
                {"target": f"idle CPU core after cloud {state}", "cpu_pct": pct, "pass": pct < 1.0}
            )
    notes = bl.Table("notes", ["fact", "value"])
    notes.add(
        "disk reserve ballast beside the buffer (fixed, not per record), MB",
        disk["reserve_bytes"] / MB,
    )
    notes.add("file after cleanup(0), bytes", disk["edgebuf_after_cleanup_total"])
    notes.add("rows deleted by cleanup(0)", disk["cleanup_deleted"])
    core_json = (
        None
        if core is None
        else {
            "venv": str(args.core_venv),
            "python": core.python,
            "before_ref": args.before,
            "labels": labels,
            "imports": core_imp,
            "idle": {k: v for k, v in idle.items() if k.startswith("core ")},
        }
    )
    bl.report(
        "footprint",
        [*tables, targets, notes],
        {
            "import_s": imports,
            "import_breakdown_ms": breakdown,
            "idle": idle,
            "disk": disk,
            "core_only": core_json,
            "targets": checks,
        },
        args.json,
    )


def core_tables(
    args: argparse.Namespace,
    core: CoreSetup,
    imp: dict[str, dict[str, Any]],
    idle: dict[str, dict[str, Any]],
    labels: dict[str, str],
) -> list[bl.Table]:
    """The before/after table of the core-only install, and where its import time goes."""
    b, a = imp["before"], imp["after"]
    t = bl.Table(
        f"core-only install ({args.core_venv}: `pip install .`, no extras): before = "
        f"{labels['before']}, after = {labels['after']}",
        ["measure", "before", "after", "after ÷ before"],
        footer=(
            f"import: fresh interpreter minus bare `python -c pass` "
            f"({b['bare_s'] * 1e3:.0f} / {a['bare_s'] * 1e3:.0f} ms), medians of "
            f"{args.import_runs}, interleaved; idle: RSS {args.settle:g} s after start, CPU "
            f"over {args.window:g} s (10 ms ticks), bare python in this venv "
            f"{idle['core bare python']['rss_bytes'] / MB:.1f} MB; heavy = "
            f"{', '.join(HEAVY)}; every child's edgebuf.__file__ checked against its tree"
        ),
    )

    def row(name: str, before: Any, after: Any, ratio: bool = True) -> None:
        t.add(name, before, after, bl.ratio(after, before) if ratio else None)

    row("`import edgebuf`, ms", b["import_s"] * 1e3, a["import_s"] * 1e3)
    row(
        "heavy packages loaded by `import edgebuf`",
        ", ".join(b["heavy"]) or "none",
        ", ".join(a["heavy"]) or "none",
        ratio=False,
    )
    row("modules in sys.modules after `import edgebuf`", b["modules"], a["modules"])
    up = {k: idle[f"core {k}, cloud up"] for k in ("before", "after")}
    row(
        "heavy packages loaded by a started client",
        ", ".join(up["before"]["heavy"]) or "none",
        ", ".join(up["after"]["heavy"]) or "none",
        ratio=False,
    )
    for state in ("up", "down"):
        r = {k: idle[f"core {k}, cloud {state}"] for k in ("before", "after")}
        row(
            f"idle client RSS, cloud {state}, MB",
            r["before"]["rss_bytes"] / MB,
            r["after"]["rss_bytes"] / MB,
        )
    for state in ("up", "down"):
        r = {k: idle[f"core {k}, cloud {state}"] for k in ("before", "after")}
        row(
            f"idle client CPU, cloud {state}, ms ({args.window:g} s)",
            round(r["before"]["cpu_s"] * 1e3),
            round(r["after"]["cpu_s"] * 1e3),
        )
        row(
            f"idle client CPU, cloud {state}, % of a core",
            f"{r['before']['cpu_pct']:.3f}",
            f"{r['after']['cpu_pct']:.3f}",
            ratio=False,
        )

    where = bl.Table(
        "where `import edgebuf` spends its time on the core-only install "
        "(self time by top-level package, -X importtime, one run; the 8 largest of each), ms",
        ["package", "before", "after"],
    )
    by_b, by_a = dict(b["breakdown_ms"]), dict(a["breakdown_ms"])
    shown = {pkg for pkg, _ in b["breakdown_ms"][:8]} | {pkg for pkg, _ in a["breakdown_ms"][:8]}
    for pkg in sorted(shown, key=lambda k: -max(by_b.get(k, 0), by_a.get(k, 0))):
        where.add(pkg, by_b.get(pkg), by_a.get(pkg))  # —: not imported at all
    where.add("total (all packages)", sum(by_b.values()), sum(by_a.values()))
    return [t, where]


if __name__ == "__main__":
    main()
