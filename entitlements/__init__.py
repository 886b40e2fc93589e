"""An event-sourced account-entitlement engine: what may this account do at time T,
as we knew it at time K?

The flow, top to bottom: commands.py (what users ask) -> account.py / region.py
(aggregates that decide, using rules.py) -> events in the store (store.py) ->
projections (the `projections` package) -> engine.py (apply, fan-out, check).

The names below are loaded when first used, so that importing a domain module
(`entitlements.rules`, say) never imports the engine and, through it, the projections,
which themselves import the domain: every module imports on its own.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from entitlements.commands import MalformedCommand
    from entitlements.decisions import CommandResult, Decision, PositionNotReached, UnknownAccount
    from entitlements.engine import Engine, open_engine
    from entitlements.rules import CAPABILITIES, UnknownCapability

_HOME = {
    "CAPABILITIES": "entitlements.rules",
    "CommandResult": "entitlements.decisions",
    "Decision": "entitlements.decisions",
    "Engine": "entitlements.engine",
    "MalformedCommand": "entitlements.commands",
    "PositionNotReached": "entitlements.decisions",
    "UnknownAccount": "entitlements.decisions",
    "UnknownCapability": "entitlements.rules",
    "open_engine": "entitlements.engine",
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
