"""The simulation's constants and the client settings it runs with."""

from __future__ import annotations

from typing import Any

DAY, HOUR = 86_400.0, 3_600.0
DEVICE = "sim-cam"
WATCHDOG_S = 0.2
PASS_S = 1e-6  # virtual seconds one shipping pass takes
LIVELOCK_STEPS = 20_000  # steps at one virtual instant: a busy loop
RECOUNT_EVERY = 8  # full recount on every 8th step that changed the file, and on each fault
TRACE_LEN = 30
JITTER = 0.1  # the connectivity monitor's probe jitter (its default)
SETTINGS: dict[str, Any] = {
    "batch_size": 32, "batch_timeout": 10.0, "monitor_interval": 30.0, "health_timeout": 5.0,
    "request_timeout": 30.0, "max_retries": 5, "backoff_base": 2.0, "backoff_cap": 60.0,
    "backfill_batch_size": 512, "cleanup_after_days": 1.0, "reserve_bytes": 0,
    "drain_concurrency": 1,  # a second request in flight runs on a pool thread: not replayable
}  # fmt: skip
WORLD_PLANTS = ("counter", "seq", "capacity")  # planted defects (tests of the checkers)
