"""The layout's rules, checked on the source: no import cycles, the core imports nothing
above it, no module over MAX_LINES, nothing outside ``edgebuf.store`` runs SQL, and the
public APIs (``edgebuf.__all__``, ``edgebuf.lab.__all__``) are pinned."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edgebuf
import edgebuf.lab

ROOT = Path(edgebuf.__file__).parent
MAX_LINES = 410
CORE = ("edgebuf", "edgebuf.aio", "edgebuf.client", "edgebuf.clock", "edgebuf.config",
        "edgebuf.errors", "edgebuf.records", "edgebuf.status")  # fmt: skip
CORE_PACKAGES = ("edgebuf.store", "edgebuf.delivery", "edgebuf.space")
ABOVE_CORE = ("edgebuf.lab", "edgebuf.ops", "edgebuf.service", "edgebuf.vision", "cloud")
# The facade's documented upward references, each a lazy import inside a function:
# ``client.monitor`` and ``edgebuf.BufferMonitor`` (the design's names) hand out the ops view.
ALLOWED_UPWARD = {("edgebuf", "edgebuf.ops.monitor"), ("edgebuf.client", "edgebuf.ops.monitor")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """edgebuf/cloud modules imported by ``path`` (lazy ones included, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "cloud":
                found.add("cloud")
            elif name in modules:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _is_core(name: str) -> bool:
    return (
        name in CORE
        or name.startswith(tuple(p + "." for p in CORE_PACKAGES))
        or name in CORE_PACKAGES
    )


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            # "import edgebuf.x" runs edgebuf/__init__ first: that is not an edge back to it
            if dep == "edgebuf" or dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_core_imports_nothing_above_it():
    bad = [
        (mod, dep)
        for mod, deps in _graph().items()
        if _is_core(mod)
        for dep in deps
        if dep.startswith(ABOVE_CORE) and (mod, dep) not in ALLOWED_UPWARD
    ]
    assert not bad, f"core modules importing lab/ops/service/vision/cloud: {bad}"


def test_ops_service_vision_never_import_the_lab():
    # The CLI is the entry point of every layer: its drill/reliability/simulate commands
    # import the lab lazily, inside the command. Nothing else in ops may.
    bad = [
        (mod, dep)
        for mod, deps in _graph().items()
        if mod.startswith(("edgebuf.ops", "edgebuf.service", "edgebuf.vision"))
        and mod != "edgebuf.ops.cli"
        for dep in deps
        if dep.startswith(("edgebuf.lab", "cloud"))
    ]
    assert not bad, bad


def test_no_module_over_the_size_limit():
    big = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines (split them by concept): {big}"


# The simulation audits the store from outside: it recounts the rows on its own read-only
# connection and damages a page of the file, so a defect of the store cannot hide itself.
INDEPENDENT_AUDITORS = {"edgebuf.lab.simworld", "edgebuf.lab.simcloud"}


def test_only_the_store_touches_sqlite():
    users = sorted(
        name
        for name, path in _modules().items()
        if not name.startswith("edgebuf.store")
        and name not in INDEPENDENT_AUDITORS
        and "sqlite3" in _imports_raw(path)
    )
    assert not users, f"modules outside edgebuf.store using sqlite3 directly: {users}"


def _imports_raw(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_import_edgebuf_loads_no_heavy_or_upper_layers():
    code = (
        "import sys, edgebuf\n"
        "heavy = ('pandas', 'matplotlib', 'click', 'httpx', 'cloud', 'edgebuf.ops', 'edgebuf.lab',"
        " 'edgebuf.service', 'edgebuf.vision', 'ultralytics', 'torch')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_public_api_is_pinned():
    assert sorted(edgebuf.__all__) == sorted([
        "BufferCorruptError", "BufferFullError", "BufferMonitor", "BufferRecoveryManager",
        "ClientClosedError", "Clock", "ConfigError", "ConnectivityMonitor", "DiskFullError",
        "EdgeSettings", "EdgebufError", "EnhancedAsyncLoggingClient", "FakeClock",
        "HttpTransport", "InvalidRecordError", "LocalBufferManager", "RecordTypeError",
        "SendResult", "StatsExport", "Status", "StorageError", "SystemClock", "Transport",
        "__version__",
    ])  # fmt: skip
    for name in edgebuf.__all__:
        assert getattr(edgebuf, name) is not None


def test_lab_api_is_pinned():
    assert edgebuf.lab.__all__ == sorted([
        "DrillConfig", "EventLog", "FAST_SETTINGS", "Fault", "FaultProxy", "Reply",
        "ScriptedCloud", "audit", "fake_prediction", "fetch_gaps", "fetch_predictions",
        "fetch_stats", "format_summary", "kill_process", "plot_backlog", "plot_fleet",
        "plot_frame", "plot_gaps", "plot_latency", "plot_requests", "producer_command",
        "run_drill", "RestoreConfig", "run_restore_drill", "format_restore",
        "simulate_camera", "simulate_outage",
    ])  # fmt: skip
    for name in edgebuf.lab.__all__:
        assert getattr(edgebuf.lab, name) is not None


def test_the_constructor_names_every_setting():
    import inspect

    from edgebuf import EdgeSettings, EnhancedAsyncLoggingClient

    params = inspect.signature(EnhancedAsyncLoggingClient).parameters
    missing = sorted(set(EdgeSettings.model_fields) - set(params))
    assert not missing, f"settings without a typed keyword argument: {missing}"
    assert all(params[n].annotation != inspect.Parameter.empty for n in EdgeSettings.model_fields)
