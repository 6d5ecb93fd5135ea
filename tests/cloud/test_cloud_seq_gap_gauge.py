"""`edgebuf_cloud_seq_missing{device_id}` (cloud/metrics_gaps.py), the gauge behind the
EdgebufCloudSeqGapsPersist alert: exact within its window, bounded in devices, computed off
the event loop, and a failed scan clears it instead of showing stale figures."""

from __future__ import annotations

import re
import time
import types

from cloud.metrics_gaps import SeqGapCollector


def load(api, helpers) -> None:
    """cam-1: seqs 1-3, 7-8, 10, 15 (8 missing); cam-2: 5-6; cam-3: seq 1 twice and 3."""
    api.post(
        "/log",
        json=helpers.batch(
            "cam-1", [helpers.record(f"c1-{seq}", seq) for seq in (1, 2, 3, 7, 8, 10, 15)]
        ),
    )
    api.post("/log", json=helpers.batch("cam-2", helpers.seq_records(5, 6, prefix="c2-")))
    api.post(
        "/log",
        json=helpers.batch(
            "cam-3",
            [helpers.record("c3-a", 1), helpers.record("c3-b", 1), helpers.record("c3-c", 3)],
        ),
    )


def test_missing_seqs_per_device_within_the_window(api, helpers):
    load(api, helpers)
    db = api.app.state.cloud.db
    assert SeqGapCollector(db).scan() == {"cam-1": 8, "cam-2": 0, "cam-3": 1}
    # The newest 5 seq numbers of cam-1 are 11..15, of which only 15 is stored.
    assert SeqGapCollector(db, window=5).scan() == {"cam-1": 4, "cam-2": 0, "cam-3": 1}
    # At most max_devices devices, the first by id.
    assert SeqGapCollector(db, max_devices=2).scan() == {"cam-1": 8, "cam-2": 0}
    assert SeqGapCollector(db).scan() == {"cam-1": 8, "cam-2": 0, "cam-3": 1}
    # A retried batch changes nothing; filling a hole lowers the count.
    api.post("/log", json=helpers.batch("cam-1", [helpers.record("c1-9", 9)]))
    api.post("/log", json=helpers.batch("cam-1", [helpers.record("c1-9", 9)]))
    assert SeqGapCollector(db).scan()["cam-1"] == 7


def test_metrics_endpoint_serves_the_gauge_after_a_background_scan(api, helpers):
    text = api.get("/metrics").text  # an empty store: the families, no samples
    assert "# TYPE edgebuf_cloud_seq_missing gauge" in text
    assert "edgebuf_cloud_seq_missing{" not in text
    load(api, helpers)
    registered = api.app.state.cloud.metrics.registry._collector_to_names  # no public list
    collector = next(c for c in registered if isinstance(c, SeqGapCollector))
    collector.ttl = 0.0  # rescan on every scrape
    deadline = time.monotonic() + 10
    while 'edgebuf_cloud_seq_missing{device_id="cam-1"} 8.0' not in text:
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
        text = api.get("/metrics").text
    assert 'edgebuf_cloud_seq_missing{device_id="cam-3"} 1.0' in text
    assert float(re.search(r"^edgebuf_cloud_seq_scan_seconds (\S+)$", text, re.M)[1]) > 0


def test_a_failed_scan_is_counted_and_clears_the_figures():
    def broken_connect():
        raise OSError("database gone")

    collector = SeqGapCollector(
        types.SimpleNamespace(engine=types.SimpleNamespace(connect=broken_connect))
    )
    collector.missing = {"cam-1": 3}
    collector._scan_in_background()
    assert collector.errors == 1 and collector.missing == {}
    names = {f.name: f for f in collector.describe()}
    assert names["edgebuf_cloud_seq_scan_errors"].samples[0].value == 1
