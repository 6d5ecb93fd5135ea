"""The edge inference service: a stub detector in-process (endpoints, metrics, timings,
errors), then the real ``edgebuf edge`` process against a real cloud process (SIGTERM
flushes and exits; with the cloud down, the unsent records stay on disk)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cloud.testing import CloudServer, free_port
from edgebuf import BufferMonitor, EnhancedAsyncLoggingClient
from edgebuf.lab.testing import FAST_SETTINGS, ScriptedCloud
from edgebuf.lab.verify import fetch_predictions
from edgebuf.service.edge import EdgeService, create_edge_app
from edgebuf.vision.detector import FakeDetector
from edgebuf.vision.sources import SourceError, open_source

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

# Starlette's TestClient warns that its httpx support is deprecated; only noise here.
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

FAST = FAST_SETTINGS


def write_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / f"img{i:03d}.png"
        )
    return folder


@pytest.fixture
def client(tmp_path):
    c = EnhancedAsyncLoggingClient(
        "http://127.0.0.1:9", tmp_path / "buffer.db", "edge-1", transport=ScriptedCloud()
    )
    yield c
    c.close(timeout=1)


def test_folder_source_yields_bgr_frames_in_name_order(tmp_path):
    folder = write_images(tmp_path / "in", 3)
    Image.new("RGB", (8, 4), (255, 0, 0)).save(folder / "a_red.png")
    frames = list(open_source(str(folder)))
    assert [name for name, _ in frames] == ["a_red.png", "img000.png", "img001.png", "img002.png"]
    red = frames[0][1]
    assert red.shape == (4, 8, 3) and tuple(red[0, 0]) == (0, 0, 255)  # BGR
    with pytest.raises(SourceError):
        list(open_source(str(tmp_path / "missing")))
    with pytest.raises(SourceError):
        list(open_source(str(write_images(tmp_path / "empty", 0))))


def test_every_frame_is_logged_with_timings_status_and_metrics(tmp_path, client):
    folder = write_images(tmp_path / "in", 5)
    service = EdgeService(client, lambda: FakeDetector(delay_s=0.01), str(folder))
    http = TestClient(create_edge_app(service))
    assert http.get("/health").status_code == 200
    not_ready = http.get("/ready")
    assert not_ready.status_code == 503 and not_ready.json()["reason"] == "model not loaded"

    service.run_detector()

    assert http.get("/ready").status_code == 200
    assert client.store.counts()["pending"] == 5
    status = http.get("/status").json()
    assert status["counts"]["pending"] == 5 and status["device_id"] == "edge-1"
    edge = status["edge"]
    assert edge["frames"] == 5 and edge["source"]["state"] == "finished"
    assert edge["model"] == {"name": "fake", "version": "fake@0"}
    assert edge["inference_ms"]["mean"] >= 10.0  # the stub sleeps 10 ms
    assert 0 < edge["logging_ms"]["mean"] < edge["inference_ms"]["mean"]
    assert edge["logging_vs_inference_pct"] > 0
    text = http.get("/metrics").text
    assert "edge_frames_total 5.0" in text
    assert "edge_inference_seconds_count 5.0" in text
    assert "edge_logging_seconds_count 5.0" in text
    assert 'edge_detections_total{class_name="part"} 5.0' in text
    assert 'edgebuf_buffer_records{status="pending"} 5.0' in text
    assert "edge_ready 1.0" in text
    assert 'edge_model_info{model="fake",version="fake@0"} 1.0' in text


def test_records_carry_image_id_model_version_and_detections(tmp_path, client):
    folder = write_images(tmp_path / "in", 2)
    EdgeService(client, FakeDetector, str(folder)).run_detector()
    conn = client.store.read_connection()
    try:
        rows = conn.execute(
            "SELECT image_id, model_version, prediction_data, priority"
            " FROM prediction_buffer ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    assert [r[0] for r in rows] == ["img000.png", "img001.png"]
    assert {r[1] for r in rows} == {"fake@0"}
    prediction = json.loads(rows[0][2])
    assert prediction["image"] == {"width": 64, "height": 48}
    assert prediction["detections"][0]["class_name"] == "part"
    assert rows[0][3] == 1  # a frame with detections ranks above an empty one


def test_inference_error_is_counted_and_the_loop_goes_on(tmp_path, client):
    folder = write_images(tmp_path / "in", 6)
    service = EdgeService(client, lambda: FakeDetector(fail_every=3), str(folder))
    service.run_detector()
    assert service.frames == 4 and client.store.counts()["pending"] == 4
    text = TestClient(create_edge_app(service)).get("/metrics").text
    assert 'edge_frame_errors_total{stage="inference"} 2.0' in text


def test_bad_source_is_retried_and_reported_until_stopped(tmp_path, client):
    service = EdgeService(client, FakeDetector, str(tmp_path / "nope"), source_retry_s=0.01)
    timer = threading.Timer(0.3, service.stop)
    timer.start()
    service.run_detector()
    assert service.frames == 0
    assert service.edge_status()["source"]["state"].startswith("error: no such source")
    text = TestClient(create_edge_app(service)).get("/metrics").text
    assert 'edge_frame_errors_total{stage="source"}' in text


def test_not_ready_while_shutting_down_and_max_frames(tmp_path, client):
    folder = write_images(tmp_path / "in", 4)
    service = EdgeService(
        client, FakeDetector, str(folder), loop=True, max_frames=10, flush_timeout=0.2
    )
    service.run_detector()
    assert service.frames == 10  # a looped folder, stopped by --max-frames
    http = TestClient(create_edge_app(service))
    assert http.get("/ready").status_code == 200
    service.shutdown()
    assert http.get("/ready").json() == {"ready": False, "reason": "shutting down"}


# --------------------------------------------------------------------- the real process
def start_edge(tmp_path, endpoint: str, source: str, *extra: str, flush: str = "10"):
    port = free_port()
    env = {
        **os.environ,
        "BUFFER_DB_PATH": str(tmp_path / "edge" / "buffer.db"),
        "CLOUD_LOGGING_ENDPOINT": endpoint,
        "DEVICE_ID": "edge-proc",
        "EDGEBUF_BATCH_TIMEOUT": "0.2",
        "EDGEBUF_MONITOR_INTERVAL": "0.3",
        "EDGEBUF_REQUEST_TIMEOUT": "1",
        "EDGEBUF_HEALTH_TIMEOUT": "0.5",
        "EDGEBUF_MAX_RETRIES": "1",
        "EDGEBUF_BACKOFF_BASE": "0.05",
    }
    cmd = [
        sys.executable,
        "-m",
        "edgebuf.ops.cli",
        "edge",
        "--source",
        source,
        "--detector",
        "fake",
        "--port",
        str(port),
        "--flush-timeout",
        flush,
        "--log-level",
        "warning",
        *extra,
    ]
    log = open(tmp_path / "edge.log", "wb")  # noqa: SIM115 - closed by the caller's proc
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_process_logs_every_frame_to_the_cloud_and_exits_cleanly_on_sigterm(tmp_path):
    folder = write_images(tmp_path / "in", 12)
    with CloudServer(f"sqlite:///{tmp_path}/cloud.db") as cloud:
        proc, url = start_edge(tmp_path, cloud.url, str(folder))
        try:
            wait_for(lambda: httpx.get(f"{url}/ready").status_code == 200, what="/ready")
            assert httpx.get(f"{url}/health").json() == {"status": "alive"}
            wait_for(
                lambda: httpx.get(f"{url}/status").json()["counts"]["sent"] == 12, what="12 sent"
            )
            metrics = httpx.get(f"{url}/metrics").text
            assert "edge_frames_total 12.0" in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, (tmp_path / "edge.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        stored = fetch_predictions(cloud.url, "edge-proc")
    assert sorted(item["image_id"] for item in stored) == [f"img{i:03d}.png" for i in range(12)]
    assert {item["model_version"] for item in stored} == {"fake@0"}


def test_sigterm_with_the_cloud_down_is_bounded_and_keeps_records_on_disk(tmp_path):
    folder = write_images(tmp_path / "in", 7)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc, url = start_edge(tmp_path, dead, str(folder), flush="1")
    try:
        wait_for(lambda: httpx.get(f"{url}/status").json()["edge"]["frames"] == 7, what="7 frames")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "edge.log").read_text()
        assert time.monotonic() - started < 10  # 1 s flush + a bounded close
    finally:
        if proc.poll() is None:
            proc.kill()
    with BufferMonitor(tmp_path / "edge" / "buffer.db") as mon:
        counts = mon.get_full_status()["counts"]
    assert counts["pending"] + counts["sending"] == 7 and counts["sent"] == 0
