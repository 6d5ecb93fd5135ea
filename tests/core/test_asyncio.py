"""The asyncio surface: the same client, awaitable, and the event loop never waits on the
cloud (a heartbeat task keeps ticking while ``aflush`` waits for a slow one)."""

from __future__ import annotations

import asyncio
import time

from support import DET

from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.lab.testing import ScriptedCloud


class SlowCloud(ScriptedCloud):
    def send(self, body: bytes):
        time.sleep(0.4)  # a slow cloud: every answer takes 0.4 s
        return super().send(body)


async def _heartbeat(ticks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks.append(time.monotonic())
        await asyncio.sleep(0.01)


def _worst_gap(ticks: list[float]) -> float:
    return max(b - a for a, b in zip(ticks, ticks[1:]))


def test_async_with_log_and_aflush_keep_the_event_loop_running(tmp_path):
    cloud = SlowCloud()

    async def main() -> tuple[float, float, list[str]]:
        ticks: list[float] = []
        stop = asyncio.Event()
        beat = asyncio.create_task(_heartbeat(ticks, stop))
        await asyncio.sleep(0.05)  # the heartbeat is ticking
        async with EnhancedAsyncLoggingClient(
            "http://127.0.0.1:9", tmp_path / "b.db", "cam-1", transport=cloud,
            batch_size=8, batch_timeout=0.05, monitor_interval=60,
        ) as client:  # fmt: skip
            ids = [await client.alog_prediction(DET, image_id=f"f{i}") for i in range(40)]
            ids += await client.alog_predictions([{"prediction": DET}] * 10)
            started = time.monotonic()
            assert await client.aflush(timeout=30)
            ended = time.monotonic()
        stop.set()
        await beat
        during = [started] + [t for t in ticks if started < t < ended] + [ended]
        return ended - started, _worst_gap(during), ids

    waited, worst, ids = asyncio.run(main())
    assert len(ids) == 50 and len(cloud.stored) == 50
    assert waited > 0.4  # aflush really waited on the slow cloud...
    assert worst < 0.25, f"the event loop stalled {worst:.3f} s"  # ...without blocking the loop
