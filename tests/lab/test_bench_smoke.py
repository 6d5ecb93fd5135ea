"""The benchmarks in bench/ still run: each script once with --smoke, as a real subprocess.

Nothing here judges performance (that is measured by running the scripts, never asserted
in a timed test); it checks that each script exits 0, prints its tables and the command
that reproduces it, and writes its --json results, so the benchmarks cannot rot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = [
    "hot_path",
    "drain",
    "cloud_ingest",
    "footprint",
    "inference",
    "cloud_volume",
    "uplink",
]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke_run_prints_its_tables(name: str, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--smoke", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    out = done.stdout
    assert f"reproduce: python bench/{name}.py --smoke --json" in out, out[-2000:]
    lines = out.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("---")]
    assert rules, f"no table printed:\n{out}"
    assert all(i + 1 < len(lines) and lines[i + 1].strip() for i in rules), "a table has no rows"
    assert "targets" in lines, "the targets table is missing"
    target_rows = lines[lines.index("targets") + 3 :]
    assert any(word in row for row in target_rows for word in ("PASS", "MISS", "skipped"))

    data = json.loads(results.read_text())
    assert data["benchmark"] == name
    assert data["command"].startswith(f"python bench/{name}.py --smoke")
    assert data["targets"] is not None
