"""The admins' door: commands, validated whole and applied once per command id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header

from entitlements.domain.commands import MalformedCommand
from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Admin, EngineDep
from entitlements.http.errors import errors
from entitlements.http.schemas import MAX_BATCH, CommandsOut

router = APIRouter(tags=["commands"], route_class=JsonBodyRoute)


@router.post(
    "/v1/commands",
    response_model=CommandsOut,
    responses=errors(401, 403, 413, 415, 422, 503),
)
def commands(
    body: dict[str, Any],
    engine: EngineDep,
    who: Admin,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> dict[str, Any]:
    """One command object, or {"commands": [...]}: validated whole first (a malformed
    item refuses the body, 422, nothing applied), then applied in order. `actor` is the
    token's name unless given; `Idempotency-Key` is the command_id of a single command,
    so a retried request applies nothing twice. A key given twice anywhere in the body is
    a 422 naming it, as in a command file."""
    items = body.get("commands") if set(body) == {"commands"} else [body]
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise MalformedCommand(1, "commands", f"expected 1 to {MAX_BATCH} command objects", "item")
    if idempotency_key is not None and len(items) != 1:
        raise MalformedCommand(
            1, "Idempotency-Key", "names one command: send one per request", "item"
        )
    prepared = [
        {
            "actor": who.name,
            **item,
            **({"command_id": idempotency_key} if idempotency_key else {}),
        }
        if isinstance(item, dict)
        else item
        for item in items
    ]
    results = engine.apply(prepared)
    return {
        "results": [r.as_dict("item") for r in results],
        "position": max((r.position or 0 for r in results), default=engine.index.position),
    }
