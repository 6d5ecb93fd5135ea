"""The public surface: names from the design, an explicit __all__, settings precedence."""

from __future__ import annotations

import asyncio
import time

import pytest

import edgebuf
from edgebuf import ClientClosedError, ConfigError, EnhancedAsyncLoggingClient


def test_all_is_explicit_and_importable():
    assert sorted(edgebuf.__all__) == edgebuf.__all__
    for name in edgebuf.__all__:
        assert hasattr(edgebuf, name), name
    for design_name in (
        "EnhancedAsyncLoggingClient",
        "LocalBufferManager",
        "BufferRecoveryManager",
        "BufferMonitor",
    ):
        assert design_name in edgebuf.__all__
    for method in ("get_full_status", "print_status", "export_stats", "repair_db"):
        assert callable(getattr(edgebuf.BufferMonitor, method))
    assert callable(edgebuf.BufferRecoveryManager.start_recovery)


def test_design_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUD_LOGGING_ENDPOINT", raising=False)
    c = EnhancedAsyncLoggingClient(db_path=tmp_path / "b.db", device_id="d")
    s = c.settings
    assert (
        s.batch_size,
        s.batch_timeout,
        s.monitor_interval,
        s.health_timeout,
        s.request_timeout,
        s.max_retries,
        s.cleanup_after_days,
        s.capacity_bytes,
    ) == (32, 10.0, 30.0, 5.0, 30.0, 5, 7.0, 1024**3)
    assert s.endpoint == "http://127.0.0.1:8001"
    c.close()


def test_environment_then_kwargs(tmp_path, monkeypatch):
    monkeypatch.setenv("BUFFER_DB_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("CLOUD_LOGGING_ENDPOINT", "http://cloud.example:8001/")
    monkeypatch.setenv("DEVICE_ID", "line1-cam3")
    monkeypatch.setenv("EDGEBUF_BATCH_SIZE", "64")
    c = EnhancedAsyncLoggingClient()
    assert c.settings.db_path == tmp_path / "env.db" and (tmp_path / "env.db").exists()
    assert c.settings.endpoint == "http://cloud.example:8001"
    assert c.device_id == "line1-cam3" and c.settings.batch_size == 64
    c.close()
    c = EnhancedAsyncLoggingClient(db_path=tmp_path / "kw.db", batch_size=8)
    assert c.settings.batch_size == 8 and c.settings.db_path == tmp_path / "kw.db"
    c.close()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"endpoint": "ftp://x"}, "http"),
        ({"endpoint": "not a url"}, "http"),
        ({"device_id": "bad id with spaces"}, "device_id"),
        ({"batch_size": 0}, "batch_size"),
        ({"durability": "sometimes"}, "durability"),
        ({"batch_timeout": -1}, "batch_timeout"),
    ],
)
def test_bad_settings_fail_at_construction(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EnhancedAsyncLoggingClient(db_path=tmp_path / "b.db", **kwargs)


def test_bad_env_value_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBUF_BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match="batch_size"):
        EnhancedAsyncLoggingClient(db_path=tmp_path / "b.db")


def test_unwritable_db_path_fails_at_construction(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="db_path"):
        EnhancedAsyncLoggingClient(db_path=tmp_path / "f" / "b.db")


def test_closed_client_refuses_records(tmp_path):
    c = EnhancedAsyncLoggingClient(db_path=tmp_path / "b.db", device_id="d")
    c.close()
    c.close()  # idempotent
    with pytest.raises(ClientClosedError):
        c.log_prediction({})


def test_usable_from_asyncio_without_blocking_long(tmp_path):
    async def main():
        client = EnhancedAsyncLoggingClient(
            "http://127.0.0.1:9", tmp_path / "b.db", "d", monitor_interval=60
        ).start()
        worst = 0.0
        for i in range(200):
            t = time.perf_counter()
            client.log_prediction({"detections": []}, image_id=str(i))
            worst = max(worst, time.perf_counter() - t)
            await asyncio.sleep(0)
        flushed = await asyncio.to_thread(client.flush, 0.2)
        await asyncio.to_thread(client.close, 2.0)
        return worst, flushed

    worst, flushed = asyncio.run(main())
    assert flushed is False  # nothing listens on port 9: records stay pending
    assert worst < 0.5  # one local commit, never a network wait


def test_bulk_log_is_all_or_nothing(tmp_path):
    from edgebuf import InvalidRecordError

    c = EnhancedAsyncLoggingClient(db_path=tmp_path / "b.db", device_id="d")
    ids = c.log_predictions([{"prediction": {"i": i}, "image_id": f"f{i}"} for i in range(50)])
    assert len(set(ids)) == 50
    with pytest.raises(InvalidRecordError, match="item 2"):
        c.log_predictions(
            [{"prediction": {}}, {"prediction": {}}, {"prediction": {"x": float("nan")}}]
        )
    with pytest.raises(TypeError, match="unknown keys"):
        c.log_predictions([{"prediction": {}, "imageid": "typo"}])
    assert c.store.counts()["pending"] == 50
    c.close()
