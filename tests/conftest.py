"""Shared fixtures: a policy-test stack on a fake clock, and real-server helpers.

The tests mirror the package: ``core/`` (store, delivery, space on a fake clock, no
sockets), ``integration/`` (real processes, uvicorn, SIGKILL, tmpfs, the edge service),
``lab/`` (drills, the reliability matrix, benchmarks' smoke runs, the simulation),
``cloud/`` (the cloud service on SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

# tests/support.py is shared by every folder of tests (core, integration, lab).
sys.path.insert(0, str(Path(__file__).parent))

from edgebuf import EnhancedAsyncLoggingClient, FakeClock
from edgebuf.lab.testing import ScriptedCloud


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud() -> ScriptedCloud:
    return ScriptedCloud()


@pytest.fixture
def make_client(tmp_path, clock, cloud):
    """Build a client on a fake clock and scripted cloud; threads are NOT started, so a
    test drives ``client.shipper.run_once()`` and ``client.connectivity.check_once()``."""
    made = []

    def make(**kwargs) -> EnhancedAsyncLoggingClient:
        kwargs.setdefault("db_path", tmp_path / "buffer.db")
        kwargs.setdefault("device_id", "cam-1")
        kwargs.setdefault("endpoint", "http://127.0.0.1:9")
        # Reconciliation (on by default) has its own tests (core/test_reconcile.py); the
        # policy tests here count delivered rows as the cleanup rules see them without it.
        kwargs.setdefault("reconcile_interval", 0)
        # One backlog request at a time runs in the calling thread: a pass of the loop is
        # then deterministic on the fake clock. The adaptive lane's worker threads have
        # their own tests (core/test_concurrency.py, integration/test_uplink_drain.py).
        kwargs.setdefault("drain_concurrency", 1)
        client = EnhancedAsyncLoggingClient(
            transport=kwargs.pop("transport", cloud),
            clock=clock,
            rng=random.Random(7),
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for c in made:
        c.close(timeout=1)
