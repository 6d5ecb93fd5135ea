"""The asyncio surface of ``EnhancedAsyncLoggingClient``: the same client, awaitable.

``async with``, ``alog_prediction``, ``alog_predictions``, ``aflush``, ``aclose``. Logging
awaits one local SQLite commit in the event loop (tens of microseconds: a thread hop would
cost more); everything that can wait on the network runs in a worker thread, so the event
loop never blocks on the cloud.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

Self = TypeVar("Self", bound="AsyncSurface")




class AsyncSurface:
    """Mixed into the client: awaitable twins of its blocking methods, no logic of their own."""

    async def __aenter__(self: Self) -> Self:
        self.start()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def alog_prediction(
        self,
        prediction: Mapping[str, Any],
        image_id: str | None = None,
        model_version: str | None = None,
        *,
        timestamp: float | None = None,
        priority: int | None = None,
    ) -> str:
        """``log_prediction`` for asyncio code: the event loop waits for one local commit
        (tens of microseconds), never for the network."""
        return self.log_prediction(  # type: ignore[attr-defined]
            prediction, image_id, model_version, timestamp=timestamp, priority=priority
        )

    async def alog_predictions(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """``log_predictions`` for asyncio code (one local transaction)."""
        return self.log_predictions(records)  # type: ignore[attr-defined]

    async def aflush(self, timeout: float = 30.0) -> bool:
        """``flush`` for asyncio code: waits in a worker thread; the event loop keeps running."""
        return await asyncio.to_thread(self.flush, timeout)  # type: ignore[attr-defined]

    async def aclose(self, timeout: float = 10.0) -> None:
        """``close`` for asyncio code: the final flush waits in a worker thread."""
        await asyncio.to_thread(self.close, timeout)  # type: ignore[attr-defined]
