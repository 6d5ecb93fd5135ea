"""The `edgebuf` CLI against a real buffer file, through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgebuf import LocalBufferManager
from edgebuf.records import prepare_record


def run(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edgebuf.ops.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.fixture
def buffer(tmp_path):
    path = tmp_path / "b.db"
    with LocalBufferManager(path) as s:
        s.add_predictions("cam", [prepare_record({"detections": []}, now=1.0, max_bytes=999)] * 6)
        s.mark_sent(s.claim(2).ids)
        s.mark_failed(s.claim(1).ids, "HTTP 422: bad record")
    return path


def test_status_json_and_env_default(buffer):
    out = run("status", "--json", env={"BUFFER_DB_PATH": str(buffer)})
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["counts"] == {"pending": 3, "sending": 0, "sent": 2, "failed": 1}


def test_status_text(buffer):
    out = run("status", "--db", str(buffer))
    assert out.returncode == 0 and "pending 3" in out.stdout


def test_requeue_failed(buffer):
    out = run("requeue-failed", "--db", str(buffer))
    assert out.returncode == 0 and "requeued 1" in out.stdout
    with LocalBufferManager(buffer, exclusive=False) as s:
        assert s.counts()["failed"] == 0 and s.counts()["pending"] == 4


def test_cleanup(buffer):
    out = run("cleanup", "--db", str(buffer), "--older-than-days", "0")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["deleted"] == 2


def test_export(buffer, tmp_path):
    out = run("export", "--db", str(buffer), "--out", str(tmp_path / "x"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "x" / "records.csv").exists()


def test_repair(buffer):
    out = run("repair", "--db", str(buffer))
    assert out.returncode == 0 and json.loads(out.stdout)["repaired"] is False


def test_missing_buffer_is_a_clear_error(tmp_path):
    out = run("status", "--db", str(tmp_path / "nope.db"))
    assert out.returncode == 1 and "no buffer at" in out.stderr


def test_corrupt_buffer_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"junk" * 2000)
    out = run("status", "--db", str(bad))
    assert out.returncode == 1 and "edgebuf repair" in out.stderr and "Traceback" not in out.stderr
