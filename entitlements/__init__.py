"""An event-sourced account-entitlement engine: what may this account do at time T,
as we knew it at time K?

The flow, top to bottom: commands.py (what users ask) -> account.py / region.py
(aggregates that decide, using rules.py) -> events in the store (store.py) ->
projections (the `projections` package) -> engine.py (apply, fan-out, check).
"""

from entitlements.commands import MalformedCommand
from entitlements.decisions import CommandResult, Decision, PositionNotReached, UnknownAccount
from entitlements.engine import Engine, open_engine
from entitlements.rules import CAPABILITIES, UnknownCapability

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
