"""The change feed: what changed after a log position, long-polled. A waiting request holds
no thread: it waits on the event loop until the worker's follower says the index moved."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Checker, WorkerDep
from entitlements.http.errors import errors
from entitlements.http.schemas import MAX_BATCH, MAX_WAIT, ChangesOut

router = APIRouter(tags=["checks"], route_class=JsonBodyRoute)


@router.get("/v1/changes", response_model=ChangesOut, responses=errors(401, 403, 422, 503))
async def changes(
    worker: WorkerDep,
    _: Checker,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 100,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
) -> JSONResponse:
    """Capability changes recorded after log position `after`, in log order: account,
    capability, old and new answer, both clocks, position, cause. A region-wide change
    of a rule that is not fanned out (online subscriptions closed) is one item naming
    the region. With nothing new, waits up to `wait` seconds. Ask again from `next`."""
    engine = worker.ready_engine()
    deadline = time.monotonic() + wait
    # A following worker's index is level with the log: the feed is read as it stands; one
    # that does not follow reads the store first (as `engine.changes` does by default).
    read = partial(engine.changes, limit=limit, catch_up=not worker.following)
    items, next_position = await worker.off_loop(read, after)
    while not items and (left := deadline - time.monotonic()) > 0:
        if not await worker.until_position(next_position + 1, left):
            break
        items, next_position = await worker.off_loop(read, next_position)
    return JSONResponse({"changes": items, "next": next_position})
