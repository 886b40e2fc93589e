"""The auditors' reads: history with both clocks, the chain behind a decision, the
rejection log, the integrity check. They read the store, so they run in the thread pool
(plain `def` routes), away from the event loop that answers checks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from entitlements.application import audit
from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Auditor, EngineDep, Time
from entitlements.http.errors import errors
from entitlements.http.schemas import ExplainOut

router = APIRouter(tags=["auditors"], route_class=JsonBodyRoute)


@router.get("/v1/accounts/{account_id}/history", responses=errors(401, 403, 404, 422, 503))
def history(
    account_id: str, engine: EngineDep, _: Auditor, as_known_at: Time = None
) -> dict[str, Any]:
    """The account's events in log order, with both clocks, causes and who asked. With
    `as_known_at`: only the events recorded by then (each with its log `position`), and
    `entries`: those events and the account's rejected commands recorded by then, in
    log order, `kind` saying which is which."""
    if as_known_at is None:
        return {"account_id": account_id, "events": engine.history(account_id)}
    entries = audit.history(engine, account_id, as_known_at, rejections=True)
    return {
        "account_id": account_id,
        "as_known_at": as_known_at,
        "events": [e for e in entries if e["kind"] == "event"],
        "rejections": [e for e in entries if e["kind"] == "rejection"],
        "entries": entries,
    }


@router.get(
    "/v1/accounts/{account_id}/explain/{capability}",
    response_model=ExplainOut,
    responses=errors(401, 403, 404, 422, 503),
)
def explain(
    account_id: str,
    capability: str,
    engine: EngineDep,
    _: Auditor,
    at: Time = None,
    as_known_at: Time = None,
) -> dict[str, Any]:
    """The decision `can` gives at (at, as_known_at), the effective interval around `at`
    over which it holds (`holds.since`, `holds.until`; null for an open end), and the
    chain behind it: each deciding event with both clocks, actor and command_id, and
    for a rule-caused one the rule and the region event that switched it."""
    return audit.explain(engine, account_id, capability, at, as_known_at)


@router.get("/v1/rejections", responses=errors(401, 403, 422, 503))
def rejections(
    engine: EngineDep,
    _: Auditor,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    region: Annotated[str | None, Query(max_length=2)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The rejection log, in log order: every rejected command after position `after`."""
    entries = [r for r in engine.rejections(account_id, region) if r["position"] > after]
    return {"rejections": entries}


@router.get("/v1/audit/verify", responses=errors(401, 403, 422, 503))
def verify(
    engine: EngineDep,
    _: Auditor,
    receipt: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """`entitlements audit verify --json`: the integrity chain recomputed over the whole
    log: `ok`, `head` (position, hash), or `break` (position, kind, reason); with
    `receipt=HASH@POSITION`, whether the log up to POSITION is unchanged since."""
    return audit.verify(engine, receipt)
