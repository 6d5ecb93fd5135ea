"""`edgebuf drill`, the README's main job, with small parameters: exit code, summary, PNGs."""

from __future__ import annotations

import json
import subprocess
import sys


def test_drill_passes_and_writes_its_outputs(tmp_path):
    out = tmp_path / "drill"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgebuf.ops.cli",
            "drill",
            "--duration",
            "6",
            "--fps",
            "40",
            "--outage-start",
            "1.5",
            "--outage",
            "3",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS - zero loss, zero duplicates" in proc.stdout
    assert "time constants scaled" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    [device] = summary["devices"]
    assert device["logged"] == 240 and device["stored"] >= 240
    assert device["lost"] == 0 and device["duplicated"] == 0 and device["gap_ranges"] == 0
    kinds = [e["kind"] for e in summary["events"]]
    assert kinds.index("outage_start") < kinds.index("edge_killed") < kinds.index("outage_end")
    for png in ("backlog.png", "latency.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_drill_rejects_an_outage_past_the_end(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgebuf.ops.cli",
            "drill",
            "--duration",
            "2",
            "--outage",
            "5",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "outage must end" in proc.stderr
