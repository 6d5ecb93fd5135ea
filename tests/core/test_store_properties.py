"""Property-based tests: the store as a state machine, and arbitrary payloads.

Any sequence of log / claim / ack / release / fail / requeue / cleanup / evict / reopen
keeps every record exactly once: held in the buffer in the state the model expects,
or deleted only as a delivered row (cleanup) or an audited eviction.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from edgebuf import FakeClock, InvalidRecordError, LocalBufferManager, RecordTypeError
from edgebuf.records import prepare_record
from edgebuf.space.capacity import CapacityManager


class StoreMachine(RuleBasedStateMachine):
    batches = Bundle("batches")

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "b.db"
        self.clock = FakeClock()
        self.store = LocalBufferManager(self.path, clock=self.clock)
        self.state: dict[str, str] = {}  # record_id -> expected status
        self.cleaned: set[str] = set()
        self.evicted: set[str] = set()
        self.seq = 0

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    def _ids_of(self, row_ids):
        if not row_ids:
            return []
        q = ",".join("?" * len(row_ids))
        return [
            r[0]
            for r in self.store._conn.execute(
                f"SELECT record_id FROM prediction_buffer WHERE id IN ({q})", row_ids
            )
        ]

    @rule(n=st.integers(1, 20), empty=st.booleans())
    def log(self, n, empty):
        pred = {"detections": [] if empty else [{"c": 1}]}
        recs = [prepare_record(pred, now=self.clock.time(), max_bytes=1000) for _ in range(n)]
        for rid in self.store.add_predictions("cam", recs):
            self.state[rid] = "pending"
        self.seq += n

    @rule(target=batches, n=st.integers(1, 30), newest=st.booleans())
    def claim(self, n, newest):
        batch = self.store.claim(n, newest_first=newest)
        if batch is None:
            assert "pending" not in self.state.values()
            return []
        ids = self._ids_of(batch.ids)
        for rid in ids:
            assert self.state[rid] == "pending"
            self.state[rid] = "sending"
        return batch.ids

    @rule(batch=batches)
    def ack(self, batch):
        for rid in self._ids_of(batch):
            if self.state[rid] == "sending":
                self.state[rid] = "sent"
        self.store.mark_sent(batch)

    @rule(batch=batches)
    def release(self, batch):
        for rid in self._ids_of(batch):
            if self.state[rid] == "sending":
                self.state[rid] = "pending"
        self.store.release(batch, "HTTP 503")

    @rule(batch=batches)
    def fail(self, batch):
        for rid in self._ids_of(batch):
            if self.state[rid] == "sending":
                self.state[rid] = "failed"
        self.store.mark_failed(batch, "HTTP 422")

    @rule()
    def requeue(self):
        self.store.requeue_failed()
        for rid, st_ in self.state.items():
            if st_ == "failed":
                self.state[rid] = "pending"

    @rule(days=st.floats(0, 10))
    def advance_and_cleanup(self, days):
        self.clock.advance(days * 86_400)
        before = {r for r, s in self.state.items() if s == "sent"}
        CapacityManager(self.store, capacity_bytes=1 << 30).cleanup()
        held = {r[0] for r in self.store._conn.execute("SELECT record_id FROM prediction_buffer")}
        gone = before - held
        for rid in gone:
            del self.state[rid]
            self.cleaned.add(rid)

    @rule(cap=st.integers(2_000, 20_000), bounded=st.booleans())
    def squeeze(self, cap, bounded):
        manager = CapacityManager(self.store, capacity_bytes=cap)
        rec = prepare_record({"detections": []}, now=self.clock.time(), max_bytes=1000)
        try:  # bounded: the store may skip the hook while its live-bytes bound has room
            self.store.add_predictions(
                "cam",
                [rec],
                before_commit=manager.make_room,
                capacity_bytes=cap if bounded else None,
            )
        except Exception:
            return
        held = {r[0] for r in self.store._conn.execute("SELECT record_id FROM prediction_buffer")}
        dropped = {r[0] for r in self.store._conn.execute("SELECT record_id FROM dropped_records")}
        for rid in list(self.state):
            if rid not in held:
                if rid in dropped:
                    assert self.state[rid] == "pending"  # only pending rows are evicted
                    self.evicted.add(rid)
                else:
                    assert self.state[rid] == "sent"  # else only delivered rows go
                    self.cleaned.add(rid)
                del self.state[rid]
        newest = self.store._conn.execute(
            "SELECT record_id FROM prediction_buffer ORDER BY id DESC LIMIT 1"
        ).fetchone()[0]
        self.state[newest] = "pending"
        self.seq += 1

    @rule(limit=st.none() | st.integers(1, 10))
    def fold(self, limit):
        self.store.fold(limit=limit)

    @rule()
    def crash_and_reopen(self):
        # As a SIGKILL would leave it: no final fold of the counters at close.
        self.store._exclusive = False
        self.store.close()
        self.store = LocalBufferManager(self.path, clock=self.clock)
        for rid, st_ in self.state.items():
            if st_ == "sending":
                self.state[rid] = "pending"

    @rule()
    def reopen(self):
        self.store.close()
        self.store = LocalBufferManager(self.path, clock=self.clock)
        for rid, st_ in self.state.items():
            if st_ == "sending":
                self.state[rid] = "pending"

    @invariant()
    def every_record_exactly_once(self):
        rows = self.store._conn.execute(
            "SELECT record_id, status FROM prediction_buffer"
        ).fetchall()
        assert len(rows) == len({r for r, _ in rows})
        assert dict(rows) == self.state
        meta = self.store.metadata()
        assert (
            meta["total_buffered"]
            == self.seq
            == len(self.state) + len(self.cleaned) + len(self.evicted)
        )
        assert meta.get("seq:cam", 0) == self.seq
        live = self.store._conn.execute(
            "SELECT coalesce(sum(length(prediction_data)), 0) + count(*) * 120 FROM prediction_buffer"
        ).fetchone()[0]
        assert meta["live_bytes"] == live
        if self.store._live_upper is not None:  # the bound the hot path trusts
            assert self.store._live_upper >= live


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_any_payload_is_stored_exactly_or_refused_clearly(payload):
    try:
        rec = prepare_record(payload, now=1.0, max_bytes=100_000)
    except (InvalidRecordError, RecordTypeError):
        text = repr(payload)
        has_bad_float = any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(payload))
        has_surrogate = any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
        assert has_bad_float or has_surrogate, payload
        return
    assert json.loads(rec.prediction_json) == payload


def _leaves(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj
