"""For the operator and the load balancer: health, metrics, and a token check alone."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Checker, WorkerDep
from entitlements.http.errors import errors
from entitlements.http.metrics import CONTENT_TYPE
from entitlements.http.schemas import Health

router = APIRouter(tags=["operations"], route_class=JsonBodyRoute)


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Starting, or stale past max-staleness"}},
)
async def healthz(worker: WorkerDep) -> JSONResponse:
    """`ready` while this worker follows the log; `degraded` (still 200) while it cannot
    read the store and answers from memory, `stale_since` saying since when; 503 once that
    lasts longer than `serve --max-staleness`, and while `starting` (no index yet). A load
    balancer takes a worker out on 503 and back on 200."""
    status, body = worker.health()
    return JSONResponse(body, status)


@router.get("/metrics", response_class=Response, responses=errors(503))
def prometheus(worker: WorkerDep) -> Response:
    """Prometheus text of the whole server (every worker): checks by capability and
    outcome, check latency, each worker's index position, lag, state and staleness."""
    return Response(worker.metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/v1/ping", responses=errors(401, 403, 503))
async def ping(_: Checker) -> dict[str, bool]:
    """A token check and nothing else."""
    return {"ok": True}
