"""Liveness: delivery never stalls. One test per defect of issue 12, each failing on the
code before its fix: a transport exception, a requeue from another process, a settle that
the disk refuses, an unsafe close or constructor, ``flush`` on a virtual clock."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from support import drive, log_n

from edgebuf import EnhancedAsyncLoggingClient, LocalBufferManager, StorageError
from edgebuf.errors import DiskFullError
from edgebuf.lab.testing import ScriptedCloud


class FlakyTransport(ScriptedCloud):
    """A healthy cloud behind a custom Transport that raises ``errors`` once each."""

    def __init__(self, *errors: BaseException) -> None:
        super().__init__()
        self.errors = list(errors)

    def send(self, body: bytes):
        if self.errors:
            raise self.errors.pop(0)
        return super().send(body)


def _passes(client, clock, n: int) -> None:
    """``n`` passes of the loop the way its thread runs it: an exception is survived."""
    for _ in range(n):
        try:
            delay = client.shipper.run_once()
        except Exception:
            delay = 1.0
        clock.advance(delay or 0.001)


@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyError("x"), OSError("eio")])
def test_an_exception_from_the_transport_never_stalls_delivery(make_client, clock, error):
    cloud = FlakyTransport(error)
    client = make_client(transport=cloud)
    log_n(client, 32)
    _passes(client, clock, 50)
    assert client.store.counts() == {"pending": 0, "sending": 0, "sent": 32, "failed": 0}
    assert len(cloud.stored) == 32


def test_requeue_failed_from_another_process_is_sent_by_the_running_client(
    make_client, cloud, clock, tmp_path
):
    client = make_client()
    cloud.poison = set(log_n(client, 3)[:1])  # the cloud refuses one record: dead letter
    drive(client, clock)
    assert client.store.counts()["failed"] == 1
    cloud.poison = set()  # the cloud was fixed; an operator requeues from a shell
    with LocalBufferManager(tmp_path / "buffer.db", exclusive=False) as cli_store:
        assert cli_store.requeue_failed() == 1
    _passes(client, clock, 20)  # nobody tells the running client
    assert client.store.counts() == {"pending": 0, "sending": 0, "sent": 3, "failed": 0}


def test_a_late_settle_cannot_touch_rows_a_newer_claim_holds(make_client, clock):
    client = make_client()
    log_n(client, 4)
    first = client.store.claim(10)
    client.store.release(first.ids, "timeout", claim_id=first.claim_id)
    second = client.store.claim(10)
    assert client.store.mark_sent(first.ids, claim_id=first.claim_id) == 0  # stale answer
    assert client.store.counts()["sending"] == 4
    assert client.store.mark_sent(second.ids, claim_id=second.claim_id) == 4


def test_rows_whose_settle_the_disk_refused_are_released_later(make_client, cloud, clock):
    client = make_client()
    cloud.script(503)
    store = client.store
    real_release, real_release_claim = store.release, store.release_claim
    refusals = {"release": 1, "release_claim": 1}

    def release(*args, **kwargs):
        if refusals["release"]:
            refusals["release"] -= 1
            raise DiskFullError("disk full (test)")
        return real_release(*args, **kwargs)

    def release_claim(claim_id, error):
        if refusals["release_claim"]:
            refusals["release_claim"] -= 1
            with store._lock:
                store._orphaned.add(claim_id)  # what the real one does when the disk refuses
            return 0
        return real_release_claim(claim_id, error)

    store.release, store.release_claim = release, release_claim
    log_n(client, 32)
    _passes(client, clock, 30)
    assert client.store.counts() == {"pending": 0, "sending": 0, "sent": 32, "failed": 0}
    assert not client.store.has_orphaned


def test_flush_with_a_timeout_returns_on_a_virtual_clock(make_client, clock):
    cloud = ScriptedCloud(up=False)
    cloud.script(*[None] * 1000)  # the cloud never answers
    client = make_client(transport=cloud)
    log_n(client, 5)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(client.flush(timeout=30)), daemon=True)
    t.start()
    t.join(20)  # real seconds: flush waits 30 virtual seconds, not 30 real ones
    assert result == [False]
    assert client.store.counts()["pending"] + client.store.counts()["sending"] == 5


class BrokenClose(ScriptedCloud):
    def close(self) -> None:
        raise RuntimeError("close failed")


def test_close_runs_every_step_even_when_one_fails(make_client, tmp_path):
    client = make_client(transport=BrokenClose())
    client.start()
    with pytest.raises(RuntimeError, match="close failed"):
        client.close(timeout=1)
    assert not client.shipper._thread.is_alive() and client.store.closed
    client.close()  # idempotent: a second close does nothing
    LocalBufferManager(tmp_path / "buffer.db").close()  # the buffer's lock was released


def test_a_failed_constructor_leaks_no_open_buffer(tmp_path, clock, cloud, monkeypatch):
    from edgebuf.space.reserve import DiskReserve

    def boom(self):
        raise OSError("no space for the reserve")

    monkeypatch.setattr(DiskReserve, "ensure", boom)
    with pytest.raises(OSError):
        EnhancedAsyncLoggingClient(db_path=tmp_path / "b.db", device_id="c", transport=cloud,
                                   clock=clock)  # fmt: skip
    monkeypatch.undo()
    LocalBufferManager(tmp_path / "b.db").close()  # not held by the failed client


def test_cli_refuses_to_guess_the_buffer_when_a_variable_is_malformed(tmp_path):
    good = tmp_path / "mine.db"
    LocalBufferManager(good, exclusive=False).close()
    env = {"BUFFER_DB_PATH": str(good), "EDGEBUF_BATCH_SIZE": "lots", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "edgebuf", "status"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=60)  # fmt: skip
    assert out.returncode == 1
    assert "EDGEBUF_BATCH_SIZE" in out.stderr and "prediction_buffer.db" not in out.stdout


def test_reopening_a_buffer_this_process_holds_says_so(make_client):
    make_client()
    with pytest.raises(StorageError, match="already open in this process"):
        make_client()
