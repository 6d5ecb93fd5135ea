"""End to end with real parts: a real uvicorn cloud process on 127.0.0.1 with its own
SQLite file, a real buffer file, real subprocesses killed with SIGKILL. Every test counts
what arrived in the cloud."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
from support import wait_for

from cloud.testing import CloudServer
from edgebuf import EnhancedAsyncLoggingClient, LocalBufferManager
from edgebuf.lab.producer import command as producer_command
from edgebuf.lab.testing import FAST_SETTINGS
from edgebuf.lab.verify import audit

FAST = FAST_SETTINGS
DET = {"detections": [{"class_name": "part", "confidence": 0.8, "box": [1, 2, 3, 4]}]}


@pytest.fixture
def server(tmp_path):
    srv = CloudServer(f"sqlite:///{tmp_path}/cloud.db")
    srv.start()
    yield srv
    srv.close()


def make(server, tmp_path, **kw):
    return EnhancedAsyncLoggingClient(server.url, tmp_path / "buffer.db", "cam-1", **{**FAST, **kw})


def test_outage_then_recovery_delivers_every_record_once(server, tmp_path):
    with make(server, tmp_path) as client:
        ids = [client.log_prediction(DET, image_id=f"a{i}") for i in range(100)]
        assert client.flush(timeout=20)
        server.kill()  # the cloud crashes
        ids += [client.log_prediction(DET, image_id=f"b{i}") for i in range(300)]
        deadline = time.monotonic() + 10
        while not client.connectivity.is_down and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.connectivity.is_down
        status = client.get_buffer_status()
        assert status["counts"]["pending"] == 300  # waiting on disk
        assert status["delivery"]["last_error"]
        server.start()  # back on the same port
        assert client.flush(timeout=30)
        assert client.recovery.recoveries_started >= 1
    result = audit(server.url, "cam-1", ids)
    assert result.ok and result.stored == 400 and result.unexpected == 0, result
    assert result.gaps == []


def test_hung_cloud_past_request_timeout(server, tmp_path):
    with make(server, tmp_path, request_timeout=0.5) as client:
        server.pause()  # SIGSTOP: connections hang
        ids = [client.log_prediction(DET) for _ in range(64)]
        wait_for(lambda: client.sender.stats.last_error, what="a request to time out")
        assert client.store.counts()["sent"] == 0
        server.resume()
        assert client.flush(timeout=30)
    result = audit(server.url, "cam-1", ids)
    assert result.ok and result.stored == 64, result


def test_close_is_bounded_with_a_hung_cloud_and_nothing_is_marked_sent(server, tmp_path):
    client = make(server, tmp_path, request_timeout=30.0).start()
    server.pause()
    for _ in range(40):
        client.log_prediction(DET)
    wait_for(lambda: client.store.counts()["sending"] > 0, what="a request stuck in flight")
    started = time.monotonic()
    client.close(timeout=2.0)
    assert time.monotonic() - started < 6.0
    server.resume()
    with LocalBufferManager(tmp_path / "buffer.db") as store:
        counts = store.counts()
        assert counts["sent"] == 0 and counts["pending"] == 40


def producer(server, db, start, count, seed, flush=0.0):
    return subprocess.Popen(
        producer_command(
            db, server.url, "cam-9", count=count, start_frame=start, seed=seed, fps=400, flush=flush
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_producer_loses_nothing_it_acknowledged(server, tmp_path):
    rng = random.Random(11)
    db = tmp_path / "producer.db"
    returned: list[str] = []
    for round_ in range(4):
        proc = producer(server, db, round_ * 10_000, 10_000, seed=round_)
        first = proc.stdout.readline()  # the camera is logging: kill it mid-stream
        returned += [first.strip()] if len(first.strip()) == 32 else []
        time.sleep(rng.uniform(0.8, 2.0))  # a random moment of its stream (not a sync)
        if round_ == 1:
            server.kill()  # kill the cloud too, mid-stream
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        out = proc.stdout.read()  # the same buffered reader as the readline above
        proc.stderr.read()
        returned += [line for line in out.splitlines() if len(line) == 32]
        if round_ == 2:
            server.start()
    final = producer(server, db, 90_000, 50, seed=99, flush=30.0)
    out, err = final.communicate(timeout=60)
    assert final.returncode == 0, err
    returned += [line for line in out.splitlines() if len(line) == 32]
    assert len(returned) > 400
    result = audit(server.url, "cam-9", returned)
    assert not result.lost, f"{len(result.lost)} acknowledged records lost"
    assert not result.duplicated
    # at most one record per kill can be committed without its id having been printed
    assert result.unexpected <= 4
    assert result.gaps == []  # per-device sequence is complete: nothing lost in between
