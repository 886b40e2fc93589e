"""The auditors' what-if: a command file's lines applied to an in-memory copy of the
history (entitlements/application/what_if.py); nothing is recorded. It reads the whole
log, so it runs in the thread pool (a plain `def` route), away from the checks' loop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from entitlements.application.what_if import what_if, window
from entitlements.domain.commands import MalformedCommand, parse_commands, with_derived_id
from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Auditor, EngineDep
from entitlements.http.errors import errors
from entitlements.http.schemas import MAX_BATCH

router = APIRouter(tags=["auditors"], route_class=JsonBodyRoute)
FIELDS = {"commands", "from", "to", "as_known_at"}


@router.post("/v1/what-if", responses=errors(401, 403, 413, 415, 422, 503))
def what_if_route(body: dict[str, Any], engine: EngineDep, _: Auditor) -> dict[str, Any]:
    """`entitlements what-if --json`: {"commands": [...], "from"?, "to"?, "as_known_at"?}.
    The commands are validated whole as `POST /v1/commands` validates them (a malformed
    item: 422 naming item and field; `recorded_at` may be earlier than the store's newest,
    or later than now), then applied to a copy of the log in memory, each at its
    recorded_at; the answer lists the results, every account and capability whose answer
    changes in [from, to) and a summary per region and plan. Nothing is recorded."""
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise MalformedCommand(1, unknown[0], "unknown field", "item")
    items = body.get("commands")
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise MalformedCommand(1, "commands", f"expected 1 to {MAX_BATCH} command objects", "item")
    start, end, known = window(body.get("from"), body.get("to"), body.get("as_known_at"))
    parsed = parse_commands(enumerate(items, 1), "item", future=True)
    numbered = [(n, with_derived_id(cmd)) for n, cmd in enumerate(parsed, 1)]
    return what_if(engine, numbered, start, end, known).as_dict("item")
