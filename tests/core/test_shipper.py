"""Batching, retry and recovery policy on a fake clock with a scripted cloud (no sleeping)."""

from __future__ import annotations

import random

from support import DET, drive

from edgebuf.delivery.policy import backoff_delay
from edgebuf.lab.testing import Reply


def log_n(client, n, prediction=DET):
    return [client.log_prediction(prediction, image_id=f"f{i}") for i in range(n)]


def test_batch_by_count(make_client, cloud):
    client = make_client()
    log_n(client, 31)
    delay = client.shipper.run_once()
    assert cloud.requests == [] and 9.9 < delay <= 10.0
    log_n(client, 1)
    assert client.shipper.run_once() == 0.0
    assert len(cloud.requests) == 1 and len(cloud.requests[0]["records"]) == 32
    assert client.store.counts()["sent"] == 32


def test_batch_by_time(make_client, cloud, clock):
    client = make_client()
    log_n(client, 5)
    clock.advance(9.0)
    client.shipper.run_once()
    assert cloud.requests == []
    clock.advance(1.0)
    client.shipper.run_once()
    assert [len(r["records"]) for r in cloud.requests] == [5]


def test_wall_clock_jumps_do_not_stall_or_rush_batching(make_client, cloud, clock):
    client = make_client()
    log_n(client, 3)
    clock.jump_wall(-86_400)  # NTP steps back a day
    client.shipper.run_once()
    assert cloud.requests == []
    clock.advance(10.0)
    client.shipper.run_once()
    assert len(cloud.requests) == 1
    clock.jump_wall(+30 * 86_400)  # and a month forward
    log_n(client, 2)
    client.shipper.run_once()
    assert len(cloud.requests) == 1


def test_retry_with_seeded_backoff_then_delivery_once(make_client, cloud, clock):
    client = make_client()
    cloud.script(503, None, 200)
    ids = log_n(client, 32)
    start = clock.monotonic()
    drive(client, clock)
    rng = random.Random(7)
    expected_wait = backoff_delay(1, rng=rng) + backoff_delay(2, rng=rng)
    assert abs((clock.monotonic() - start) - expected_wait) < 1e-6
    assert cloud.statuses == [503, None, 200]
    assert set(cloud.received_ids().values()) == {3} and len(cloud.stored) == 32
    retries = client.store._conn.execute(
        "SELECT DISTINCT retry_count, status FROM prediction_buffer"
    ).fetchall()
    assert retries == [(2, "sent")]
    assert sorted(r for (_, r) in cloud.stored) == sorted(ids)


def test_retry_after_is_honoured(make_client, cloud, clock):
    client = make_client()
    cloud.script(Reply(429, retry_after=45.0))
    log_n(client, 32)
    client.shipper.run_once()
    resume = client.shipper.backoff_until
    assert resume - clock.monotonic() >= 45.0
    while clock.monotonic() < resume:  # waits (maintenance may wake it), does not send
        clock.advance(client.shipper.run_once())
        assert len(cloud.requests) == 1 or clock.monotonic() >= resume
    client.shipper.run_once()
    assert len(cloud.requests) == 2


def test_a_flush_skips_our_backoff_but_not_the_servers_retry_after(make_client, cloud, clock):
    client = make_client(backoff_base=30.0, backoff_cap=60.0)
    cloud.script(Reply(429, retry_after=5.0), 503)
    log_n(client, 32)
    client.shipper.run_once()
    client.shipper.request_flush()  # the cloud asked for 5 s: a flush does not cut that short
    assert client.shipper.backoff_until - clock.monotonic() >= 5.0
    client.shipper.run_once()
    assert len(cloud.requests) == 1
    clock.advance(5.0)
    client.shipper.run_once()  # a 503 without Retry-After: our own backoff, tens of seconds
    assert len(cloud.requests) == 2 and client.shipper.backoff_until - clock.monotonic() > 5.0
    client.shipper.request_flush()  # ... which a flush does skip
    client.shipper.run_once()
    assert len(cloud.requests) == 3 and client.store.counts()["sent"] == 32


def test_gives_up_after_max_retries_then_monitor_restores(make_client, cloud, clock):
    client = make_client(max_retries=3)
    cloud.script(None, None, None, None)
    log_n(client, 32)
    drive(client, clock, until=lambda: client.connectivity.is_down)
    assert len(cloud.requests) == 4  # first try + max_retries
    assert client.store.counts()["pending"] == 32  # nothing dropped, nothing expired
    clock.advance(3600)
    for _ in range(5):
        client.shipper.run_once()
    assert len(cloud.requests) == 4  # stops hammering while down
    cloud.up = False
    client.connectivity.check_once()
    assert client.connectivity.is_down
    cloud.up = True
    client.connectivity.check_once()  # restored -> recovery
    assert client.recovery.active
    drive(client, clock)
    assert len(cloud.stored) == 32 and client.store.counts()["sent"] == 32


def test_pending_rows_never_expire(make_client, cloud, clock):
    client = make_client()
    cloud.up = False
    cloud.script(*[None] * 6)
    log_n(client, 40)
    drive(client, clock, until=lambda: client.connectivity.is_down)
    clock.advance(30 * 86_400)  # a month offline, daily cleanup runs meanwhile
    client.shipper.run_once()
    client.cleanup()
    assert client.store.counts()["pending"] == 40
    cloud.up = True
    client.connectivity.check_once()
    drive(client, clock)
    assert len(cloud.stored) == 40


def test_poison_record_is_isolated_and_dead_lettered(make_client, cloud, clock):
    client = make_client()
    ids = log_n(client, 32)
    cloud.poison = {ids[13]}
    drive(client, clock)
    assert len(cloud.stored) == 31 and ("cam-1", ids[13]) not in cloud.stored
    counts = client.store.counts()
    assert counts["failed"] == 1 and counts["sent"] == 31
    err = client.store._conn.execute(
        "SELECT last_error FROM prediction_buffer WHERE status='failed'"
    ).fetchone()[0]
    assert "422" in err
    assert client.store.metadata()["total_failed"] == 1
    # the queue is not blocked by the poison record
    log_n(client, 32)
    drive(client, clock)
    assert len(cloud.stored) == 63
    # and it can be requeued once the cloud accepts it
    cloud.poison = set()
    assert client.requeue_failed() == 1
    drive(client, clock)
    assert len(cloud.stored) == 64 and client.store.counts()["failed"] == 0


def test_413_splits_instead_of_dead_lettering(make_client, cloud, clock):
    client = make_client()
    cloud.max_records = 5
    log_n(client, 32)
    drive(client, clock)
    assert len(cloud.stored) == 32 and client.store.counts()["failed"] == 0
    assert all(
        len(r["records"]) <= 5
        for body, s in zip(cloud.requests, cloud.statuses)
        if s == 200
        for r in [body]
    )


def test_lost_acknowledgement_is_resent_and_stored_once(make_client, cloud, clock):
    client = make_client()
    cloud.script(Reply(None, commit=True))
    ids = log_n(client, 32)
    drive(client, clock)
    assert all(cloud.received_ids()[i] == 2 for i in ids)
    assert len(cloud.stored) == 32
    assert client.store.counts()["sent"] == 32


def test_new_records_are_not_stuck_behind_the_backlog(make_client, cloud, clock):
    client = make_client(backfill_batch_size=100)
    cloud.up = False
    # The backlog lane sends two requests per step: enough failures for both lanes to give up.
    cloud.script(*[None] * 12)
    log_n(client, 2000)
    drive(client, clock, until=lambda: client.connectivity.is_down)
    cloud.replies.clear()
    cloud.up = True
    client.connectivity.check_once()
    for _ in range(3):  # a few backlog steps
        client.shipper.run_once()
    fresh = log_n(client, 32)
    client.shipper.run_once()  # the live lane goes first
    assert all(("cam-1", r) in cloud.stored for r in fresh)
    assert client.store.counts()["pending"] > 1000  # the backlog is still draining
    drive(client, clock)
    assert len(cloud.stored) == 2032 and set(cloud.acknowledged_ids().values()) == {1}
    seqs = cloud.stored_seqs("cam-1")
    assert seqs == list(range(1, 2033))


def test_startup_with_backlog_drains_it(tmp_path, make_client, cloud, clock):
    client = make_client()
    cloud.up = False
    log_n(client, 50)
    client.close()
    client2 = make_client()
    client2.shipper.start = client2.connectivity.start = lambda: None  # drive by hand
    client2.start()
    assert client2.recovery.active  # "load on startup"
    cloud.up = True
    drive(client2, clock)
    assert len(cloud.stored) == 50


def test_daily_cleanup_deletes_sent_rows_after_seven_days_only(make_client, cloud, clock):
    client = make_client()
    log_n(client, 32)
    drive(client, clock)
    clock.advance(6 * 86_400)
    log_n(client, 32)
    drive(client, clock)
    clock.advance(1.5 * 86_400)  # first batch is now 7.5 days old, second 1.5
    client.shipper.run_once()  # daily cleanup is due
    counts = client.store.counts()
    assert counts["sent"] == 32
    meta = client.store.metadata()
    assert meta["total_cleaned"] == 32 and meta["last_cleanup"] == clock.time()


def test_backoff_and_cleanup_survive_wall_clock_jumps(make_client, cloud, clock):
    client = make_client()
    cloud.script(503)
    log_n(client, 32)
    client.shipper.run_once()  # fails, backs off on the monotonic clock
    resume = client.shipper.backoff_until
    clock.jump_wall(-86_400)  # the wall clock steps back a day mid-backoff
    drive(client, clock)
    assert clock.monotonic() >= resume and len(cloud.stored) == 32
    sent_at = client.store._conn.execute("SELECT max(sent_at) FROM prediction_buffer").fetchone()[0]
    assert sent_at == clock.time()  # timestamps are honest: the wall clock as it was
    clock.jump_wall(+10 * 86_400)  # and forward ten days
    log_n(client, 5)
    clock.advance(86_400)  # the daily cleanup runs on the monotonic schedule
    drive(client, clock)
    meta = client.store.metadata()
    assert meta["last_cleanup"] >= clock.time() - 86_400
    assert meta["total_cleaned"] == 32  # sent rows older than 7 days by the wall clock
    assert client.store.counts()["pending"] == 0 and len(cloud.stored) == 37


def test_a_live_request_takes_every_record_logged_since_the_last(make_client, cloud, clock):
    # A backlog on disk from before a restart, then more new records than one batch between
    # two passes (a send took longer than a batch takes to fill): the live request takes all
    # of them, so none of the newest waits at the tail of the backlog.
    old = make_client()
    log_n(old, 1000)
    old.close()
    client = make_client()
    new = log_n(client, 100)
    client.shipper.run_once()
    first = cloud.requests[0]["records"]
    assert sorted(r["record_id"] for r in first) == sorted(new)
    drive(client, clock)
    assert len(cloud.stored) == 1100
