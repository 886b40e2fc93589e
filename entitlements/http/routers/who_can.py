"""`GET /v1/who-can/{capability}`: the reverse lookup, for a checker (the meeting service
asking "who in CN may host now?" is the same client that asks `can`). It walks up to a
page of the region's accounts and may read the store once (the cursor's key), so it runs
in the thread pool (a plain `def` route), away from the event loop that answers checks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from entitlements.application.who_can import MAX_CURSOR, MAX_LIMIT, Asked
from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Checker, EngineDep, Time, WorkerDep
from entitlements.http.errors import errors


class AccountOut(BaseModel):
    account_id: str
    plan: str | None
    allowed: bool
    value: int | None


class WhoCanOut(BaseModel):
    """A page: its accounts, the next page's cursor (null: the last page), the position
    every page of the walk is answered at."""

    accounts: list[AccountOut]
    next_cursor: str | None
    position: int


router = APIRouter(tags=["checks"], route_class=JsonBodyRoute)


@router.get(
    "/v1/who-can/{capability}",
    response_model=WhoCanOut,
    responses=errors(401, 403, 409, 422, 503),
)
def who_can(
    capability: str,
    engine: EngineDep,
    worker: WorkerDep,
    response: Response,
    _: Checker,
    region: Annotated[str, Query(max_length=64)],
    plan: Annotated[str | None, Query(max_length=64)] = None,
    at: Time = None,
    as_known_at: Time = None,
    denied: bool = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> dict[str, Any]:
    """The region's accounts `capability` is allowed (or, `denied=true`, refused) to at `at`
    as known at `as_known_at`, in account id order: `accounts`, `next_cursor` (null on the
    last page) and `position`, the log position every page of one walk is answered at.
    While the worker cannot follow the log, the answer carries `Entitlements-Stale-Since`."""
    asked = Asked(capability, region, plan, at, as_known_at, denied)
    answer = engine.queries.who_can(asked, limit, cursor).as_dict()
    response.headers.update(worker.stale_headers())  # as `can`: while the index may be stale
    return answer
