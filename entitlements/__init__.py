"""An event-sourced account-entitlement engine: what may this account do at time T,
as we knew it at time K?

The flow, top to bottom, one folder per layer: `domain/` (commands.py, what users ask
-> account.py / region.py, aggregates that decide with rules.py -> their events) ->
`adapters/store.py` (the log) -> the `projections` package (check index, read models)
-> `application/engine.py` (apply, fan-out, check) -> the doors, `cli/` and `http/`.

The names below are loaded when first used, so that importing a domain module
(`entitlements.domain.rules`, say) never imports the engine and, through it, the projections,
which themselves import the domain: every module imports on its own.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entitlements.application.engine import Engine, open_engine
    from entitlements.domain.commands import MalformedCommand
    from entitlements.domain.decisions import (
        CommandResult,
        Decision,
        PositionNotReached,
        UnknownAccount,
    )
    from entitlements.domain.rules import CAPABILITIES, UnknownCapability

_HOME = {
    "CAPABILITIES": "entitlements.domain.rules",
    "CommandResult": "entitlements.domain.decisions",
    "Decision": "entitlements.domain.decisions",
    "Engine": "entitlements.application.engine",
    "MalformedCommand": "entitlements.domain.commands",
    "PositionNotReached": "entitlements.domain.decisions",
    "UnknownAccount": "entitlements.domain.decisions",
    "UnknownCapability": "entitlements.domain.rules",
    "open_engine": "entitlements.application.engine",
}
__all__ = [
    "CAPABILITIES",
    "CommandResult",
    "Decision",
    "Engine",
    "MalformedCommand",
    "PositionNotReached",
    "UnknownAccount",
    "UnknownCapability",
    "open_engine",
]


def __getattr__(name: str) -> Any:
    try:
        return getattr(import_module(_HOME[name]), name)
    except KeyError:
        raise AttributeError(f"module 'entitlements' has no attribute {name!r}") from None
