"""The asyncio surface of ``EnhancedAsyncLoggingClient``: the same client, awaitable.

``async with``, ``alog_prediction``, ``alog_predictions``, ``aflush``, ``aclose``. Logging
awaits one local SQLite commit in the event loop (tens of microseconds: a thread hop would
cost more); everything that can wait on the network runs in a worker thread, so the event
loop never blocks on the cloud.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

Self = TypeVar("Self", bound="AsyncSurface")


class AsyncSurface:
    """Mixed into the client: awaitable twins of its blocking methods, no logic of their own."""

    if TYPE_CHECKING:
        # The blocking methods the client defines (``edgebuf.client``); declared here for the
        # type checker only, so the twins below are checked against the client's signatures.
        def start(self) -> AsyncSurface: ...

        def log_prediction(
            self,
            prediction: Mapping[str, Any],
            image_id: str | None = None,
            model_version: str | None = None,
            *,
            timestamp: float | None = None,
            priority: int | None = None,
        ) -> str: ...

        def log_predictions(self, records: Iterable[Mapping[str, Any]]) -> list[str]: ...

        def flush(self, timeout: float = 30.0) -> bool: ...

        def close(self, timeout: float = 10.0) -> None: ...

    async def __aenter__(self: Self) -> Self:
        self.start()
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
        return self.log_prediction(
            prediction, image_id, model_version, timestamp=timestamp, priority=priority
        )

    async def alog_predictions(self, records: Iterable[Mapping[str, Any]]) -> list[str]:
        """``log_predictions`` for asyncio code (one local transaction)."""
        return self.log_predictions(records)

    async def aflush(self, timeout: float = 30.0) -> bool:
        """``flush`` for asyncio code: waits in a worker thread; the event loop keeps running."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """``close`` for asyncio code: the final flush waits in a worker thread."""
        await asyncio.to_thread(self.close, timeout)
