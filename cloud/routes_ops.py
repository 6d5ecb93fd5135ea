"""Operational endpoints: liveness (`/health`), readiness (`/ready`) and `/metrics`.

`/health` never touches the database: the edge probes it every 30 s to decide whether the
network is up, and a slow database must not make the network look down. `/ready` is the
one that asks the database (for load balancers and the test helpers).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from cloud.errors import translate_db_errors
from cloud.models import ErrorResponse
from cloud.state import get_state

__all__ = ["router"]

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """Answer 200 while the process serves HTTP (no database access). HEAD works too."""
    return {"status": "ok"}


# HEAD as its own undocumented route: one route with both methods would give the
# OpenAPI document two operations with the same operationId.
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)


@router.get(
    "/ready",
    responses={503: {"model": ErrorResponse, "description": "Database not answering."}},
)
def ready(request: Request) -> JSONResponse:
    """Answer 200 when the database answers `SELECT 1`, else 503 with Retry-After."""
    db = get_state(request).db
    with translate_db_errors():
        db.ping()
    return JSONResponse({"status": "ready", "database": db.dialect})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this app's registry."""
    collected = get_state(request).metrics
    return Response(collected.render(), media_type=collected.content_type)
