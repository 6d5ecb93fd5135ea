"""Rollups, incremental seq state and `/devices/{id}/watermark`, against a recount from rows.

Random batches (seeded: runs, jumps, re-sends, repeated seqs under new record_ids, three
model versions, timestamps over four hours) go through the real app on both backends.
Then every derived table must equal what `cloud.rollups.rebuild` recounts from the rows,
and `/stats` (any window, any device), `/devices/{id}/gaps` and the watermark must equal
a brute-force computation in Python over the stored rows.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from cloud.buckets import DETECTION_GRAINS, RECORD_GRAINS, WILD, bucket, bucket_sql, cover
from cloud.ingest import count_classes
from cloud.rollups import DERIVED_TABLES, rebuild

T0 = 1_764_370_000.0  # 2025-11-28T22:46:40Z


# ----------------------------------------------------------------------- brute force
def stored_rows(api: Any) -> list[dict[str, Any]]:
    with api.app.state.cloud.db.engine.connect() as conn:
        rows = (
            conn.execute(
                text(
                    "SELECT device_id, record_id, seq, ts, model_version, prediction, received_at"
                    " FROM predictions"
                )
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]


def brute_stats(
    rows: list[dict[str, Any]],
    device: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> dict[str, Any]:
    kept = [
        r
        for r in rows
        if (device is None or r["device_id"] == device)
        and (since is None or r["ts"] >= since)
        and (until is None or r["ts"] < until)
    ]
    devices = []
    for name in sorted({r["device_id"] for r in kept}):
        mine = [r for r in kept if r["device_id"] == name]
        seqs = [r["seq"] for r in mine]
        devices.append(
            {
                "device_id": name,
                "count": len(mine),
                "first_timestamp": min(r["ts"] for r in mine),
                "last_timestamp": max(r["ts"] for r in mine),
                "last_received_at": max(r["received_at"] for r in mine),
                "min_seq": min(seqs),
                "max_seq": max(seqs),
                "missing_seqs": max(seqs) - min(seqs) + 1 - len(set(seqs)),
            }
        )
    versions: dict[Any, int] = {}
    classes: dict[str, int] = {}
    for r in kept:
        versions[r["model_version"]] = versions.get(r["model_version"], 0) + 1
        for name, n in count_classes(json.loads(r["prediction"])).items():
            classes[name] = classes.get(name, 0) + n
    return {
        "total_records": len(kept),
        "device_count": len(devices),
        "first_timestamp": min((r["ts"] for r in kept), default=None),
        "last_timestamp": max((r["ts"] for r in kept), default=None),
        "last_received_at": max((r["received_at"] for r in kept), default=None),
        "devices": devices,
        "model_versions": [
            {"model_version": v, "count": versions[v]}
            for v in sorted(versions, key=lambda v: (v is not None, v or ""))
        ],
        "detections_per_class": dict(sorted(classes.items())),
    }


def missing_ranges(held: set[int]) -> list[list[int]]:
    top = max(held, default=0)
    ranges, start = [], None
    for seq in range(1, top + 2):
        if seq not in held and seq <= top:
            start = seq if start is None else start
        elif start is not None:
            ranges.append([start, seq - 1])
            start = None
    return ranges


def brute_watermark(
    device: str, held: set[int], from_seq: int = 1, limit: int = 1000
) -> dict[str, Any]:
    ranges = missing_ranges(held)
    contiguous = ranges[0][0] - 1 if ranges else max(held, default=0)
    start = max(from_seq, contiguous + 1)
    cut = [[max(a, start), b] for a, b in ranges if b >= start]
    return {
        "device_id": device,
        "contiguous_through": contiguous,
        "max_seq": max(held, default=0),
        "count": len(held),
        "missing": cut[:limit],
        "complete": len(cut) <= limit,
    }


def derived(api: Any) -> dict[str, list[tuple[Any, ...]]]:
    with api.app.state.cloud.db.engine.connect() as conn:
        return {
            table: sorted(tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}")))
            for table in DERIVED_TABLES
        }


def recounted(api: Any) -> dict[str, list[tuple[Any, ...]]]:
    """The derived tables as `rebuild` recounts them (in a transaction rolled back)."""
    with api.app.state.cloud.db.engine.connect() as conn:
        with conn.begin() as tx:
            rebuild(conn)
            tables = {
                table: sorted(tuple(row) for row in conn.execute(text(f"SELECT * FROM {table}")))
                for table in DERIVED_TABLES
            }
            tx.rollback()
    return tables


# ----------------------------------------------------------------------- buckets
values = st.one_of(
    st.floats(-1e12, 1e12, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**7), 10**7).map(lambda k: k * 60.0),
    st.sampled_from(
        [
            WILD,
            -WILD,
            WILD - 0.5,
            -WILD + 0.5,
            -WILD + 2175.0,
            WILD - 3599.5,
            2.0**40,
            T0,
            T0 - 1e-6,
            0.0,
            -0.0,
        ]
    ),
)


@given(values, st.sampled_from(RECORD_GRAINS + (1,)))
def test_bucket_is_the_exact_aligned_floor(value, grain):
    start = bucket(value, grain)
    if -WILD < value < WILD:
        assert start <= value < start + grain and start % grain == 0
    else:
        assert start == value


@settings(max_examples=300)
@given(st.one_of(st.none(), values), st.one_of(st.none(), values), st.lists(values, max_size=8))
def test_cover_counts_each_value_once_exactly_inside_the_window(since, until, points):
    for grains in (RECORD_GRAINS, DETECTION_GRAINS):
        window = cover(since, until, grains)
        assert len(window.rest) <= 2
        for value in points + [v for v in (since, until) if v is not None]:
            hits = sum(
                1
                for grain, low, high in window.whole
                if (low is None or bucket(value, grain) >= low)
                and (high is None or bucket(value, grain) < high)
            )
            hits += sum(
                1
                for low, high in window.rest
                if (low is None or value >= low) and (high is None or value < high)
            )
            inside = (since is None or value >= since) and (until is None or value < until)
            assert hits == int(inside), (since, until, value, window)


def test_bucket_sql_equals_python(api):
    rng = random.Random(3)
    samples = [T0 + rng.uniform(-1e6, 1e6) for _ in range(200)] + [
        WILD,
        -WILD,
        WILD - 0.5,
        -WILD + 0.25,
        -WILD + 2175,
        2.0**40,
        -1.5,
        -60.0,
        -59.999,
        0.0,
        3599.9999999,
        2.0**60 + 4096,
        -(2.0**62),
        1e300,
        T0 - 1e-6,
        120.0,
    ]
    dialect = api.app.state.cloud.db.dialect
    with api.app.state.cloud.db.engine.connect() as conn:
        for grain in RECORD_GRAINS:
            expression = bucket_sql(":v", grain, dialect)
            for value in samples:
                got = conn.execute(text(f"SELECT {expression}"), {"v": value}).scalar()
                assert float(got) == bucket(value, grain), (value, grain)


# ----------------------------------------------------------------------- random batches
VERSIONS = (None, "v1", "v2")
CLASSES = ("part", "defect", "bolt")


def random_traffic(
    api: Any, helpers: Any, seed: int, devices: int = 3, batches: int = 40
) -> dict[str, set[int]]:
    """Post random batches; return each device's held seqs (from the 200 answers)."""
    rng = random.Random(seed)
    sent: dict[str, list[dict[str, Any]]] = {f"dev-{d}": [] for d in range(devices)}
    nxt = {device: 1 for device in sent}
    for number in range(batches):
        device = rng.choice(sorted(sent))
        kind = rng.random()
        records: list[dict[str, Any]] = []
        if kind < 0.45:  # the usual: the next seqs in order
            count = rng.randint(1, 20)
            seqs = list(range(nxt[device], nxt[device] + count))
            nxt[device] += count
        elif kind < 0.6:  # a jump ahead (the edge lost or holds back some)
            start = nxt[device] + rng.randint(1, 15)
            seqs = list(range(start, start + rng.randint(1, 8)))
            nxt[device] = seqs[-1] + 1
        elif kind < 0.75:  # fill in some of the gaps, out of order
            seqs = rng.sample(range(1, nxt[device] + 1), min(nxt[device], rng.randint(1, 10)))
        else:
            seqs = []
        for seq in seqs:
            ts = T0 + rng.uniform(0, 4 * 3600)
            if rng.random() < 0.1:
                ts = float(math.floor(ts / 60) * 60)  # exactly on a minute boundary
            records.append(
                helpers.record(
                    f"{device}-{number}-{seq}",
                    seq,
                    timestamp=ts,
                    model_version=rng.choice(VERSIONS),
                    classes=tuple(rng.choices(CLASSES, k=rng.randint(0, 3))),
                )
            )
        if sent[device] and (kind >= 0.75 or rng.random() < 0.3):  # re-sends
            records += rng.sample(sent[device], min(len(sent[device]), rng.randint(1, 12)))
        if rng.random() < 0.1 and sent[device]:  # a repeated seq under a new record_id
            old = rng.choice(sent[device])
            records.append(
                helpers.record(
                    f"{device}-{number}-again", old["seq"], timestamp=T0 + rng.uniform(0, 4 * 3600)
                )
            )
        if not records:
            continue
        rng.shuffle(records)
        answer = api.post("/log", json=helpers.batch(device, records))
        assert answer.status_code == 200, answer.text
        if rng.random() < 0.2:  # the same batch again (a lost acknowledgement)
            again = api.post("/log", json=helpers.batch(device, records)).json()
            assert again["accepted"] == 0
        sent[device] += [r for r in records if r not in sent[device]]
    return {device: {r["seq"] for r in recs} for device, recs in sent.items()}


def random_windows(rng: random.Random) -> list[tuple[float | None, float | None]]:
    windows: list[tuple[float | None, float | None]] = [
        (None, None),
        (T0, None),
        (None, T0 + 7200),
        (T0 + 3600, T0 + 7200),
        (T0 + 60, T0 + 120),
        (T0 + 61.5, T0 + 61.75),
        (T0 + 7200, T0 + 60),
    ]
    for _ in range(12):
        a = T0 + rng.uniform(-600, 4 * 3600 + 600)
        b = a + rng.choice([0.5, 30, 60, 59.9, 600, 3600, 5000, 20000])
        windows.append((round(a, rng.choice([0, 1, 3])), b))
    return windows


def test_rollups_and_seq_state_equal_a_recount_from_rows(api, helpers):
    held = random_traffic(api, helpers, seed=13)
    assert derived(api) == recounted(api)
    rows = stored_rows(api)
    rng = random.Random(7)
    for since, until in random_windows(rng):
        for device in (None, "dev-0", "dev-2", "nobody"):
            params = {
                k: v
                for k, v in {"device_id": device, "since": since, "until": until}.items()
                if v is not None
            }
            assert api.get("/stats", params=params).json() == brute_stats(
                rows, device, since, until
            ), params
    for device, seqs in held.items():
        assert api.get(f"/devices/{device}/watermark").json() == brute_watermark(device, seqs)
        for from_seq, limit in ((1, 1), (5, 2), (10**6, 10), (0, 100_000)):
            assert api.get(
                f"/devices/{device}/watermark", params={"from_seq": from_seq, "limit": limit}
            ).json() == brute_watermark(device, seqs, from_seq, limit)
        gaps = api.get(f"/devices/{device}/gaps").json()
        mine = [r for r in rows if r["device_id"] == device]
        low = min(seqs)
        assert gaps == {
            "device_id": device,
            "min_seq": low,
            "max_seq": max(seqs),
            "count": len(mine),
            "missing": max(seqs) - low + 1 - len(seqs),
            "gaps": [r for r in missing_ranges(seqs) if r[0] > low],
        }


@pytest.mark.parametrize("seed", [1, 2])
def test_recount_after_more_seeds(api, helpers, seed):
    random_traffic(api, helpers, seed=seed, devices=2, batches=25)
    assert derived(api) == recounted(api)
    rows = stored_rows(api)
    assert api.get("/stats").json() == brute_stats(rows)


# ----------------------------------------------------------------------- watermark
def test_watermark_contract(api, helpers):
    assert api.get("/devices/cam-1/watermark").json() == {
        "device_id": "cam-1",
        "contiguous_through": 0,
        "max_seq": 0,
        "count": 0,
        "missing": [],
        "complete": True,
    }
    api.post("/log", json=helpers.batch("cam-1", helpers.seq_records(3, 5)))
    assert api.get("/devices/cam-1/watermark").json() == {
        "device_id": "cam-1",
        "contiguous_through": 0,
        "max_seq": 5,
        "count": 3,
        "missing": [[1, 2]],
        "complete": True,
    }
    for first, last in ((1, 2), (7, 7), (9, 12), (20, 20)):
        api.post(
            "/log",
            json=helpers.batch("cam-1", helpers.seq_records(first, last, prefix=f"b{first}-")),
        )
    mark = api.get("/devices/cam-1/watermark").json()
    assert (mark["contiguous_through"], mark["max_seq"], mark["count"]) == (5, 20, 11)
    assert mark["missing"] == [[6, 6], [8, 8], [13, 19]] and mark["complete"]
    cut = api.get("/devices/cam-1/watermark", params={"limit": 2}).json()
    assert cut["missing"] == [[6, 6], [8, 8]] and cut["complete"] is False
    high = api.get("/devices/cam-1/watermark", params={"from_seq": 15}).json()
    assert high["missing"] == [[15, 19]] and high["contiguous_through"] == 5
    for params in ({"limit": 0}, {"limit": 100_001}, {"from_seq": -1}, {"from_seq": "x"}):
        assert api.get("/devices/cam-1/watermark", params=params).status_code == 422


def test_watermark_needs_the_devices_own_key(make_cloud_client, helpers):
    api = make_cloud_client(api_keys="admin", device_keys="cam-1:k1,cam-2:k2")
    assert api.get("/devices/cam-1/watermark").status_code == 401
    own = {"Authorization": "Bearer k1"}
    assert api.get("/devices/cam-1/watermark", headers=own).status_code == 200
    assert api.get("/devices/cam-2/watermark", headers=own).status_code == 403
    assert (
        api.get("/devices/cam-2/watermark", headers={"Authorization": "Bearer admin"}).status_code
        == 200
    )
