"""The app factory: `create_app(settings)` builds one independent cloud service.

Nothing is created at import time. The factory creates the engine (which connects
lazily); the lifespan applies or checks migrations before the first request and disposes
of the pool at shutdown. Use the app under a lifespan-running server or
`with TestClient(app)`, otherwise the schema is never prepared.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from cloud import migrate
from cloud.errors import install_error_handlers
from cloud.metrics import MetricsMiddleware
from cloud.routes_log import router as log_router
from cloud.routes_ops import router as ops_router
from cloud.routes_query import router as query_router
from cloud.settings import CloudSettings
from cloud.state import CloudState

__all__ = ["create_app"]

log = logging.getLogger(__name__)

TITLE = "edgebuf cloud logging service"
VERSION = "0.1.0"
DESCRIPTION = (
    "Receives batches of YOLO prediction records from edge devices and stores each record "
    "exactly once per (device_id, record_id, timestamp), although the edge retries (it "
    "re-sends a record unchanged). Status codes are "
    "part of the contract: 2xx ack, 408/429/5xx retry, 413 split the batch, other 4xx "
    "dead-letter."
)


def _prepare_schema(state: CloudState) -> None:
    engine = state.db.engine
    try:
        if state.settings.migrate:
            migrate.upgrade(engine)
        else:
            migrate.check_current(engine)
    except Exception:
        log.error(
            "cannot start: database schema not ready at %s",
            engine.url.render_as_string(hide_password=True),
        )
        raise


def _start_maintenance(state: CloudState) -> None:
    """One maintenance round before serving (partitions ahead), then the periodic thread."""
    try:
        state.maintenance.run_once()
    except Exception:  # noqa: BLE001 - records still land (default partition); retried later
        log.warning("start-up maintenance failed; the periodic round retries", exc_info=True)
    state.maintenance.start()


def _install_openapi(app: FastAPI, state: CloudState) -> None:
    """Document the hand-parsed `/log` body (FastAPI cannot see it) from its model."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            body = state.batch_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(body.pop("$defs", {}))
            components["LogBatch"] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: CloudSettings | None = None) -> FastAPI:
    """Build the service for `settings` (default: read from the environment now)."""
    settings = settings if settings is not None else CloudSettings()
    state = CloudState.build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(_prepare_schema, state)
            await run_in_threadpool(_start_maintenance, state)
            yield
        finally:
            await run_in_threadpool(state.maintenance.stop)
            state.db.dispose()

    app = FastAPI(title=TITLE, version=VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.cloud = state
    install_error_handlers(app, settings.retry_after_seconds)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.include_router(log_router)
    app.include_router(query_router)
    app.include_router(ops_router)
    _install_openapi(app, state)
    return app
