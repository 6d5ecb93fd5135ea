"""Graceful shutdown: SIGTERM with a backlog and the cloud down or hung. Bounded shutdown
time, nothing marked sent that was not acknowledged, everything pending on restart."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from support import wait_for

from cloud.testing import CloudServer
from edgebuf import LocalBufferManager
from edgebuf.lab.producer import command as producer_command
from edgebuf.lab.verify import fetch_predictions


@pytest.fixture
def server(tmp_path):
    srv = CloudServer(f"sqlite:///{tmp_path}/cloud.db")
    srv.start()
    yield srv
    srv.close()


def _pending(db) -> int:
    with LocalBufferManager(db, exclusive=False) as store:
        return store.counts()["pending"]


def start_producer(server, db, count=100_000):
    proc = subprocess.Popen(
        producer_command(db, server.url, "cam-t", count=count, fps=300),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc


@pytest.mark.parametrize("fault", ["down", "hung"])
def test_sigterm_with_backlog_is_bounded_and_loses_nothing(server, tmp_path, fault):
    db = tmp_path / "edge.db"
    proc = start_producer(server, db)
    wait_for(lambda: fetch_predictions(server.url, "cam-t"), what="some records delivered")
    if fault == "down":
        server.kill()
    else:
        server.pause()  # SIGSTOP: requests hang until the client's timeout
    wait_for(lambda: _pending(db) >= 100, what="a backlog on disk")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err
    assert elapsed < 15.0  # close(timeout=10) plus interpreter exit
    printed = [line for line in out.splitlines() if len(line) == 32]
    if fault == "hung":
        server.resume()
    else:
        server.start()
    with LocalBufferManager(db, exclusive=False) as store:
        counts = store.counts()
        rows = {r: s for s in ("pending", "sending", "sent", "failed") for r in store.record_ids(s)}
    assert counts["sending"] == 0 or fault == "hung"  # a hung request may still be marked
    assert counts["pending"] > 0
    stored = {item["record_id"] for item in fetch_predictions(server.url, "cam-t")}
    # nothing marked sent that the cloud did not store
    assert {r for r, s in rows.items() if s == "sent"} <= stored
    # every record whose log_prediction returned is still here, or already in the cloud
    assert set(printed) <= set(rows)
    # and the next start delivers the rest exactly once
    final = start_producer(server, db, count=1)
    final.stdout.readline()  # it logged its record: now the SIGTERM
    final.send_signal(signal.SIGTERM)
    final.communicate(timeout=30)
    resumed = subprocess.run(
        producer_command(db, server.url, "cam-t", count=0, flush=30),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    items = fetch_predictions(server.url, "cam-t")
    ids = [item["record_id"] for item in items]
    assert len(ids) == len(set(ids))
    assert set(printed) <= set(ids)
