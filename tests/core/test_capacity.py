"""The 90% rule, cleanup, eviction order and the reject policy, with exact accounting."""

from __future__ import annotations

import pytest
from support import DET, drive

from edgebuf import BufferFullError
from edgebuf.space.capacity import HIGH_WATER, LOW_WATER

EMPTY = {"detections": []}
CAP = 64 * 1024


def fill_sent(client, clock, n):
    for i in range(n):
        client.log_prediction(DET, image_id=f"s{i}")
    drive(client, clock)


def test_ninety_percent_rule_trims_sent_rows_to_eighty(make_client, clock, cloud):
    client = make_client(capacity_bytes=CAP)
    fill_sent(client, clock, 340)  # about 92% of 64 KiB in sent rows
    assert client.capacity.fraction_used() >= HIGH_WATER
    report = client.capacity.enforce()
    assert report["trimmed"] > 0
    assert client.capacity.fraction_used() <= LOW_WATER
    assert client.store.counts()["pending"] == 0
    assert client.store.metadata()["total_cleaned"] == report["trimmed"]


def test_ninety_percent_rule_never_touches_pending(make_client, clock, cloud):
    client = make_client(capacity_bytes=CAP)
    for i in range(305):
        client.log_prediction(DET, image_id=f"p{i}")
    assert client.capacity.fraction_used() >= HIGH_WATER
    client.capacity.enforce()
    assert client.store.counts()["pending"] == 305


def test_full_buffer_evicts_lowest_priority_oldest_first(make_client, clock, cloud):
    client = make_client(capacity_bytes=CAP)
    ids = []
    for i in range(600):  # more than fits; cloud never asked (threads not started)
        ids.append(client.log_prediction(EMPTY if i % 2 else DET, image_id=f"f{i}"))
    meta = client.store.metadata()
    assert meta["live_bytes"] <= CAP
    dropped = client.store._conn.execute(
        "SELECT image_id, priority, reason FROM dropped_records ORDER BY id"
    ).fetchall()
    assert dropped and all(p == 0 and r == "capacity" for _, p, r in dropped)
    dropped_frames = [int(img[1:]) for img, _, _ in dropped]
    assert dropped_frames == sorted(dropped_frames)  # oldest first
    # the oldest evictions beyond the audit's 100 rows are folded into the summary
    (folded, seq_min, seq_max, reason), *others = client.store._conn.execute(
        "SELECT records, seq_min, seq_max, reason FROM dropped_summary"
    ).fetchall()
    assert others == [] and reason == "capacity" and folded > 0
    assert len(dropped) <= 100 + 10  # the newest 100, plus one eviction's own rows (1% slack)
    assert seq_min == 2  # the very first empty frame (seq 2) went first
    assert seq_max < min(
        s for (s,) in client.store._conn.execute("SELECT seq FROM dropped_records")
    )
    held = client.store._conn.execute("SELECT count(*) FROM prediction_buffer").fetchone()[0]
    # every record is accounted for: held, listed as dropped, or counted in the summary
    assert held + len(dropped) + folded == 600 == meta["total_buffered"]
    assert meta["evicted_capacity"] == len(dropped) + folded
    assert client.store.dropped_by_reason() == {"capacity": len(dropped) + folded}
    # frames with detections are all still there
    assert (
        client.store._conn.execute(
            "SELECT count(*) FROM prediction_buffer WHERE priority=1"
        ).fetchone()[0]
        == 300
    )


def test_sent_rows_go_before_any_pending_row(make_client, clock, cloud):
    client = make_client(capacity_bytes=CAP)
    fill_sent(client, clock, 200)
    for i in range(300):
        client.log_prediction(EMPTY, image_id=f"p{i}")
    assert client.store.metadata()["evicted_capacity"] == 0
    assert client.store.counts()["pending"] == 300


def test_reject_policy_raises_and_stores_nothing(make_client, clock, cloud):
    client = make_client(capacity_bytes=CAP, overflow_policy="reject")
    n = 0
    with pytest.raises(BufferFullError, match="overflow_policy='reject'"):
        while True:
            client.log_prediction(DET)
            n += 1
    meta = client.store.metadata()
    assert meta["total_buffered"] == n == client.store.counts()["pending"]
    assert meta["rejected_full"] == 1 and meta["evicted_capacity"] == 0
    with pytest.raises(BufferFullError):
        client.log_predictions([{"prediction": DET}] * 3)
    assert client.store.counts()["pending"] == n  # all-or-nothing


def test_cleanup_reclaims_file_space(make_client, clock, cloud):
    client = make_client()
    for i in range(3000):
        client.log_prediction({"blob": "x" * 500, "i": i})
    drive(client, clock)
    before = client.store.size_info()["file_bytes"]
    clock.advance(8 * 86_400)
    report = client.cleanup()
    assert report["deleted"] == 3000
    assert client.store.size_info()["file_bytes"] < before / 2
    assert report["reclaimed_bytes"] > 0


def test_a_long_outage_with_eviction_keeps_the_audit_bounded_and_exact(make_client, clock):
    client = make_client(capacity_bytes=CAP)  # never started: the cloud is never reached
    for i in range(6000):  # 20 times what fits
        client.log_prediction(EMPTY, image_id=f"f{i}")
    conn = client.store._conn
    listed = conn.execute("SELECT count(*) FROM dropped_records").fetchone()[0]
    folded, seq_min, seq_max = conn.execute(
        "SELECT records, seq_min, seq_max FROM dropped_summary"
    ).fetchone()
    held_min = conn.execute("SELECT min(seq) FROM dropped_records").fetchone()[0]
    assert listed <= 110 and seq_min == 1 and seq_max == held_min - 1
    evicted = client.store.metadata()["evicted_capacity"]
    assert folded + listed == evicted == 6000 - client.store.counts()["pending"]
    assert client.store.size_info()["used_bytes"] < 2 * CAP + 256 * 1024
    # a repair carries the summary over, exactly
    client.close()
    from edgebuf.store.repair import repair_db

    repair_db(client.store.path)
    client = make_client(capacity_bytes=CAP)
    assert client.store.dropped_by_reason() == {"capacity": evicted}
