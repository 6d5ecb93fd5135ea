"""`/stats`, `/predictions` paging and `/devices/{id}/gaps` against known data."""

from __future__ import annotations

import pytest

T0 = 1_764_370_000.0


@pytest.fixture
def loaded(api, helpers):
    """cam-1: seqs 1-3, 7-8, 10, 15 (gaps 4-6, 9, 11-14); cam-2: seqs 5-6; known classes."""
    cam1 = [
        helpers.record(
            f"c1-{seq}",
            seq,
            timestamp=T0 + seq,
            classes=("part", "part", "defect") if seq == 1 else ("part",),
            model_version="v1" if seq < 10 else "v2",
        )
        for seq in (1, 2, 3, 7, 8, 10, 15)
    ]
    api.post("/log", json=helpers.batch("cam-1", cam1[:4]))
    api.post("/log", json=helpers.batch("cam-1", cam1[2:]))  # overlap: 3, 7 again
    cam2 = [
        helpers.record("c2-5", 5, timestamp=T0 + 100, model_version=None, classes=()),
        {
            "record_id": "c2-6",
            "seq": 6,
            "timestamp": T0 + 101,
            "prediction": {
                "detections": [
                    {"class": "bolt"},
                    {"name": "nut"},
                    {"class": 3},
                    {"other": 1},
                    "junk",
                    {"class_name": None, "class": "bolt"},
                ]
            },
        },
    ]
    api.post("/log", json=helpers.batch("cam-2", cam2))
    return api


def test_stats_totals_and_per_device(loaded):
    stats = loaded.get("/stats").json()
    assert stats["total_records"] == 9
    assert stats["device_count"] == 2
    assert stats["first_timestamp"] == T0 + 1
    assert stats["last_timestamp"] == T0 + 101
    assert stats["last_received_at"] >= max(d["last_received_at"] for d in stats["devices"])
    cam1, cam2 = stats["devices"]
    assert cam1 == {
        **cam1,
        "device_id": "cam-1",
        "count": 7,
        "min_seq": 1,
        "max_seq": 15,
        "missing_seqs": 8,
        "first_timestamp": T0 + 1,
        "last_timestamp": T0 + 15,
    }
    assert cam2 == {
        **cam2,
        "device_id": "cam-2",
        "count": 2,
        "min_seq": 5,
        "max_seq": 6,
        "missing_seqs": 0,
    }


def test_stats_model_versions_and_classes(loaded):
    stats = loaded.get("/stats").json()
    assert stats["model_versions"] == [
        {"model_version": None, "count": 2},
        {"model_version": "v1", "count": 5},
        {"model_version": "v2", "count": 2},
    ]
    # duplicates from the overlapping batch are not double counted
    assert stats["detections_per_class"] == {"part": 8, "defect": 1, "bolt": 2, "nut": 1, "3": 1}


def test_stats_filters(loaded):
    cam2 = loaded.get("/stats", params={"device_id": "cam-2"}).json()
    assert cam2["total_records"] == 2
    assert cam2["detections_per_class"] == {"bolt": 2, "nut": 1, "3": 1}
    window = loaded.get("/stats", params={"since": T0 + 2, "until": T0 + 10}).json()
    assert window["total_records"] == 4  # seqs 2, 3, 7, 8 (until is exclusive)
    assert window["detections_per_class"] == {"part": 4}
    iso = loaded.get(
        "/stats", params={"since": "2025-11-28T22:46:42Z", "until": "2025-11-28T22:46:50+00:00"}
    ).json()
    assert iso["total_records"] == 4
    empty = loaded.get("/stats", params={"device_id": "nobody"}).json()
    assert empty["total_records"] == 0 and empty["devices"] == []
    assert empty["first_timestamp"] is None and empty["detections_per_class"] == {}


@pytest.mark.parametrize(
    "params", [{"since": "soon"}, {"until": "nan"}, {"since": "inf"}, {"device_id": "bad/id"}]
)
def test_stats_bad_filters_are_422(api, params):
    answer = api.get("/stats", params=params)
    assert answer.status_code == 422
    assert answer.json()["detail"]


def test_stats_on_empty_database(api):
    stats = api.get("/stats").json()
    assert stats == {
        "total_records": 0,
        "device_count": 0,
        "first_timestamp": None,
        "last_timestamp": None,
        "last_received_at": None,
        "devices": [],
        "model_versions": [],
        "detections_per_class": {},
    }


def test_paging_walks_every_record_once_in_storage_order(api, helpers):
    for start in range(1, 51, 10):
        api.post("/log", json=helpers.batch("cam-1", helpers.seq_records(start, start + 9)))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = api.get("/predictions", params=params).json()
        pages += 1
        seen += [item["seq"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 8  # 7 full pages of 7 and one page of 1
    assert sorted(seen) == list(range(1, 51)) and len(seen) == 50


def test_paging_exact_multiple_has_no_empty_last_page(api, helpers):
    api.post("/log", json=helpers.batch("cam-1", helpers.seq_records(1, 10)))
    first = api.get("/predictions", params={"limit": 5}).json()
    second = api.get("/predictions", params={"limit": 5, "cursor": first["next_cursor"]}).json()
    assert len(second["items"]) == 5 and second["next_cursor"] is None


def test_predictions_filters(loaded):
    cam2 = loaded.get("/predictions", params={"device_id": "cam-2"}).json()["items"]
    assert [i["record_id"] for i in cam2] == ["c2-5", "c2-6"]
    window = loaded.get("/predictions", params={"since": T0 + 7, "until": T0 + 15}).json()
    assert sorted(i["seq"] for i in window["items"]) == [7, 8, 10]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 10_001},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": "9" * 25},
        {"cursor": "²"},
    ],
)
def test_predictions_bad_params_are_422(api, params):
    answer = api.get("/predictions", params=params)
    assert answer.status_code == 422, answer.text


def test_gaps(loaded):
    gaps = loaded.get("/devices/cam-1/gaps").json()
    assert gaps == {
        "device_id": "cam-1",
        "min_seq": 1,
        "max_seq": 15,
        "count": 7,
        "missing": 8,
        "gaps": [[4, 6], [9, 9], [11, 14]],
    }
    limited = loaded.get("/devices/cam-1/gaps", params={"limit": 2}).json()
    assert limited["gaps"] == [[4, 6], [9, 9]] and limited["missing"] == 8
    assert loaded.get("/devices/cam-2/gaps").json()["gaps"] == []


def test_gaps_with_repeated_seq(api, helpers):
    recs = [helpers.record("a", 1), helpers.record("b", 1), helpers.record("c", 3)]
    api.post("/log", json=helpers.batch("cam-1", recs))
    gaps = api.get("/devices/cam-1/gaps").json()
    assert (gaps["count"], gaps["missing"], gaps["gaps"]) == (3, 1, [[2, 2]])


def test_gaps_unknown_device_is_404(api):
    answer = api.get("/devices/nobody/gaps")
    assert answer.status_code == 404 and "nobody" in answer.json()["detail"]
    assert api.get("/devices/cam-1/gaps", params={"limit": 0}).status_code == 422


def _expected_gaps(seqs: set[int]) -> list[list[int]]:
    ordered = sorted(seqs)
    return [[a + 1, b - 1] for a, b in zip(ordered, ordered[1:]) if b > a + 1]


def test_gaps_match_a_python_model(api, helpers):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    devices = iter(range(10**6))

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(st.integers(1, 60), min_size=1, max_size=40))
    def check(seqs: list[int]) -> None:
        device = f"prop-{next(devices)}"
        recs = [helpers.record(f"r{i}", seq) for i, seq in enumerate(seqs)]
        api.post("/log", json=helpers.batch(device, recs))
        gaps = api.get(f"/devices/{device}/gaps").json()
        distinct = set(seqs)
        assert gaps["gaps"] == _expected_gaps(distinct)
        assert gaps["missing"] == max(distinct) - min(distinct) + 1 - len(distinct)
        assert gaps["count"] == len(seqs)
        stats = api.get("/stats", params={"device_id": device}).json()["devices"][0]
        assert stats["missing_seqs"] == gaps["missing"]

    check()
