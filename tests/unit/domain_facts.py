"""Builders for the pure domain tests: Facts and histories in memory, no store, no engine.

A `History` is one stream's facts as the aggregates keep them: versions in recorded order,
the list in effective order (`Fact.order`). Times are written as dates ("2020-05-19") or
ISO times and read as UTC.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from entitlements.domain.rules import (
    AccountState,
    Fact,
    RegionState,
    Verdict,
    decide,
    fold_account,
    fold_region,
)


def t(when: str) -> datetime:
    """A date or ISO time as an aware UTC datetime."""
    dt = datetime.fromisoformat(when)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


@dataclass
class History:
    """One stream's facts, in effective order; each `add` is the next version."""

    stream: str
    facts: list[Fact] = field(default_factory=list)

    @property
    def code(self) -> str:
        return self.stream.split(":", 1)[1]

    def add(
        self,
        type_: str,
        on: str,
        recorded: str | None = None,
        cause: Mapping[str, Any] | None = None,
        **data: Any,
    ) -> Fact:
        """Record `type_` effective `on`, recorded then too unless `recorded` says when."""
        version = max((f.version for f in self.facts), default=0) + 1
        fact = Fact(self.stream, type_, version, t(on), t(recorded or on), data, cause)
        bisect.insort(self.facts, fact, key=lambda f: f.order)
        return fact

    def extend(self, facts: list[Fact]) -> None:
        for f in facts:
            bisect.insort(self.facts, f, key=lambda g: g.order)


def account(
    account_id: str = "u-1",
    region: str = "CN",
    plan: str = "free",
    channel: str = "online",
    partner: str | None = None,
    on: str = "2020-01-10",
    recorded: str | None = None,
) -> History:
    """An account's history that starts with its registration."""
    h = History(f"account:{account_id}")
    h.add(
        "AccountRegistered",
        on,
        recorded,
        region=region,
        plan=plan,
        channel=channel,
        partner=partner,
    )
    return h


def region(code: str = "CN") -> History:
    """A region's history, opened on 2020-01-01 with no rules and no partners."""
    h = History(f"region:{code}")
    h.add("RegionOpened", "2020-01-01", region=code)
    return h


def rule_on(reg: History, rule: str, on: str, recorded: str | None = None) -> Fact:
    return reg.add("RegionRuleApplied", on, recorded, rule=rule)


def rule_off(reg: History, rule: str, on: str, recorded: str | None = None) -> Fact:
    return reg.add("RegionRuleLifted", on, recorded, rule=rule)


def states(
    acc: History, reg: History, at: str | None = None, known: str | None = None
) -> tuple[AccountState, RegionState]:
    """Both folds at the same (T, K), as a check takes them."""
    at_t = t(at) if at is not None else None
    known_k = t(known) if known is not None else None
    return fold_account(acc.facts, at_t, known_k), fold_region(reg.code, reg.facts, at_t, known_k)


def answer(
    capability: str, acc: History, reg: History, at: str | None = None, known: str | None = None
) -> Verdict:
    """What a check of `capability` answers at (T, K)."""
    return decide(capability, *states(acc, reg, at, known))
