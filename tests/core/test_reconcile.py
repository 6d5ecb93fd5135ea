"""End-to-end reconciliation on a fake clock: a cloud restored from an older backup loses
records the edge had delivered; reconciliation finds them and sends them again, once."""

from __future__ import annotations

from support import drive, log_n

from edgebuf.delivery.reconcile import Holdings


def _reconcile(client, clock):
    clock.advance(client.reconciler.interval)
    client.shipper.run_once()
    drive(client, clock)


def test_a_restored_cloud_gets_back_every_record_exactly_once(make_client, cloud, clock):
    client = make_client(reconcile_interval=60)
    log_n(client, 100)
    drive(client, clock)
    backup = cloud.snapshot()  # the cloud's backup: 100 records
    log_n(client, 150)
    drive(client, clock)
    assert len(cloud.stored) == 250 and client.store.counts()["sent"] == 250
    cloud.restore(backup)  # restored from the backup: the last 150 are gone
    _reconcile(client, clock)
    assert len(cloud.stored) == 250 and cloud.stored_seqs("cam-1") == list(range(1, 251))
    _reconcile(client, clock)  # the re-sent ones are confirmed on the next run
    meta = client.store.metadata()
    assert meta["total_reconcile_resent"] == 150
    assert client.store.count_confirmed() == {"confirmed": 250, "unconfirmed": 0}
    assert set(cloud.acknowledged_ids().values()) <= {1, 2}  # each re-sent at most once


def test_cleanup_deletes_only_confirmed_delivered_rows(make_client, cloud, clock):
    client = make_client(reconcile_interval=60, cleanup_after_days=0)
    log_n(client, 40)
    drive(client, clock)
    assert client.cleanup()["deleted"] == 0  # delivered, but not yet confirmed
    _reconcile(client, clock)
    assert client.cleanup()["deleted"] == 40


def test_rows_acknowledged_after_the_question_are_not_resent(make_client, cloud, clock):
    client = make_client(reconcile_interval=60)
    log_n(client, 10)
    drive(client, clock)
    real = cloud.watermark

    def stale(device_id, *, from_seq, limit):  # the cloud's answer predates the last batch
        answer = real(device_id, from_seq=from_seq, limit=limit)
        log_n(client, 5)
        drive(client, clock)
        return answer

    cloud.watermark = stale
    client.reconciler.run_once()
    assert client.store.metadata()["total_reconcile_resent"] == 0
    assert client.store.count_confirmed() == {"confirmed": 10, "unconfirmed": 5}


def test_no_reconciliation_without_a_watermark_source(make_client, tmp_path):
    class Plain:
        def send(self, body):  # pragma: no cover - not called
            raise AssertionError

        def probe(self):
            return True

        def close(self):
            pass

    client = make_client(transport=Plain(), reconcile_interval=60)
    assert client.reconciler is None and not client.capacity.require_confirmation


def test_holdings_decide_by_watermark_and_missing_ranges():
    h = Holdings(10, 30, [(12, 14), (20, 20)], complete=True)
    assert [h.held(s) for s in (1, 10, 11, 12, 14, 15, 20, 21, 30, 31)] == [
        True, True, True, False, False, True, False, True, True, False
    ]  # fmt: skip
    cut = Holdings(10, 100, [(12, 14)], complete=False)
    assert cut.held(13) is False and cut.held(14) is False and cut.held(50) is None


def test_sequences_continue_past_what_the_cloud_holds_after_losing_the_buffer(
    make_client, cloud, clock, tmp_path
):
    first = make_client(reconcile_interval=60)
    log_n(first, 50)
    drive(first, clock)
    first.close()
    # The buffer's last commits never reached the disk (a power cut in normal mode): here,
    # all of it. The next client would issue seq 1.. again, for other records.
    for leftover in tmp_path.glob("buffer.db*"):
        leftover.unlink()
    second = make_client(reconcile_interval=60)
    second.log_prediction({"before": "the check"})  # seq 1: the window before the first run
    clock.advance(10)
    second.shipper.run_once()  # the first reconciliation runs a few seconds after start
    assert second.reconciler.last.sequence_raised == {"cam-1": 50}
    second.log_prediction({"after": "the check"})
    assert second.store.sequences()["cam-1"] == 51


def test_confirmed_rows_a_restore_loses_are_sent_again(make_client, cloud, clock):
    client = make_client(reconcile_interval=60)
    log_n(client, 100)
    drive(client, clock)
    backup = cloud.snapshot()
    log_n(client, 60)
    drive(client, clock)
    _reconcile(client, clock)  # the cloud confirms all 160
    assert client.store.count_confirmed() == {"confirmed": 160, "unconfirmed": 0}
    cloud.restore(backup)  # an hour later, the cloud is restored from the older backup
    _reconcile(client, clock)
    assert cloud.stored_seqs("cam-1") == list(range(1, 161))
    assert client.store.metadata()["total_reconcile_resent"] == 60
