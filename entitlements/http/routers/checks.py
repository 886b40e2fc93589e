"""The meeting service's questions: one decision, a batch, every capability. Answered on
the event loop from the worker's in-memory index (no thread, no store read); the plain
"now" check usually never gets here (fastpath.py answers it first, with the same bytes)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from entitlements.domain.decisions import UnknownAccount
from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Checker, Time, WorkerDep
from entitlements.http.errors import errors
from entitlements.http.schemas import (
    CapabilitiesOut,
    ChecksIn,
    ChecksOut,
    DecisionOut,
    checks_json,
    decision_dict,
    dumps,
)

router = APIRouter(tags=["checks"], route_class=JsonBodyRoute)
#: What a question about one account may answer besides its answer.
ACCOUNT_ERRORS = errors(401, 403, 404, 409, 422, 503)


@dataclass(frozen=True, slots=True)
class When:
    """The (T, K) a question is asked at: `at` (None: now), as known at `as_known_at`
    (None: everything recorded)."""

    at: str | None
    as_known_at: str | None


async def asked_when(
    worker: WorkerDep,
    at: Time = None,
    as_known_at: Time = None,
    min_position: Annotated[int | None, Query(ge=0)] = None,
) -> When:
    """The question's (T, K), once this worker's index has reached `min_position` (read
    your writes: 409 after the engine's wait)."""
    await worker.reached(min_position)
    return When(at, as_known_at)


AskedWhen = Annotated[When, Depends(asked_when)]


@router.get(
    "/v1/accounts/{account_id}/can/{capability}",
    response_model=DecisionOut,
    responses=ACCOUNT_ERRORS,
)
async def can(
    account_id: str, capability: str, worker: WorkerDep, _: Checker, when: AskedWhen
) -> Response:
    """One decision, from this worker's index (never the store). While the worker cannot
    follow the log, the answer carries `Entitlements-Stale-Since`."""
    at, as_known_at = when.at, when.as_known_at
    started = time.perf_counter()
    d = await worker.check(account_id, capability, at, as_known_at)
    worker.metrics.observe(capability, d.allowed, time.perf_counter() - started)
    return Response(
        worker.json(d, at, as_known_at),
        media_type="application/json",
        headers=worker.stale_headers(),
    )


@router.post(
    "/v1/checks", response_model=ChecksOut, responses=errors(401, 403, 409, 413, 415, 422, 503)
)
async def checks(body: ChecksIn, worker: WorkerDep, _: Checker) -> Response:
    """Many decisions in one call, in order; an item that cannot be decided (an unknown
    account, a bad capability or time) is an error item in its place."""
    await worker.reached(body.min_position)
    results: list[bytes] = []
    answered: Counter[tuple[str, bool]] = Counter()
    started = time.perf_counter()
    for c in body.checks:
        try:
            d = await worker.check(c.account_id, c.capability, c.at, c.as_known_at)
            answered[c.capability, d.allowed] += 1
            results.append(worker.json(d, c.at, c.as_known_at))
        except UnknownAccount as e:
            results.append(dumps(_error_item(c.account_id, c.capability, str(e), 404)))
        except ValueError as e:
            results.append(dumps(_error_item(c.account_id, c.capability, str(e), 422)))
    worker.metrics.latency.observe(time.perf_counter() - started)
    for (capability, allowed), n in answered.items():
        worker.metrics.count(capability, allowed, n)
    position = worker.ready_engine().index.position
    return Response(
        checks_json(results, position),
        media_type="application/json",
        headers=worker.stale_headers(),
    )


def _error_item(account_id: str, capability: str, error: str, status: int) -> dict[str, Any]:
    return {"account_id": account_id, "capability": capability, "error": error, "status": status}


@router.get(
    "/v1/accounts/{account_id}/capabilities",
    response_model=CapabilitiesOut,
    responses=ACCOUNT_ERRORS,
)
async def capabilities(
    account_id: str, worker: WorkerDep, _: Checker, when: AskedWhen
) -> JSONResponse:
    """Every capability of the account at once."""
    at, as_known_at = when.at, when.as_known_at
    await worker.check(account_id, "join", at, as_known_at)  # UnknownAccount, bad times
    decisions = worker.ready_engine().index.capabilities(account_id, at, as_known_at)
    return JSONResponse(
        {
            "account_id": account_id,
            "at": at,
            "as_known_at": as_known_at,
            "capabilities": [decision_dict(d, at, as_known_at) for d in decisions],
        },
        headers=worker.stale_headers(),
    )
