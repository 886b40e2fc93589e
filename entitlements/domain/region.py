"""The region aggregate: its rules (switched on and off at effective times) and partners."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from entitlements.domain.rules import (
    NOBODY,
    Fact,
    RegionState,
    Rejected,
    Who,
    fold_region,
    iso,
    with_who,
)


def region_id(code: str) -> UUID:
    """Region aggregates have stable ids derived from their code."""
    return uuid5(NAMESPACE_URL, f"entitlements:region:{code}")


@dataclass(frozen=True)
class RegionRules:
    """A region's events as account commands read them (no aggregate needed): its code and
    facts in effective order. The Region aggregate offers the same two attributes."""

    code: str
    facts: Sequence[Fact]

    def state_at(self, at: datetime | None = None, known: datetime | None = None) -> RegionState:
        return fold_region(self.code, self.facts, at, known)


class Region(Aggregate):
    """A region's rule switches and authorized partners, each with both clocks."""

    TOPIC = "entitlements:Region"  # explicit, stable topics: modules can move, the log stays

    class Created(Aggregate.Created):  # the library's base "created" class; never stored
        TOPIC = "entitlements:Region.Created"

    @staticmethod
    def create_id(region: str) -> UUID:
        return region_id(region)

    @event("RegionOpened", topic="entitlements:RegionOpened")
    def __init__(
        self,
        region: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self.code = region
        self.facts: list[Fact] = []
        self._remember("RegionOpened", effective_at, recorded_at, actor, command_id, region=region)

    # -- what the region says at a time ------------------------------------------------

    def state_at(self, at: datetime | None = None, known: datetime | None = None) -> RegionState:
        return fold_region(self.code, self.facts, at, known)

    # -- commands: validate, then record -------------------------------------------------

    def apply_rule(
        self, rule: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if rule in self.state_at(effective_at).rules_on:
            raise Rejected(f"{rule} is already in force in {self.code} at {iso(effective_at)}")
        self._rule_applied(rule=rule, effective_at=effective_at, recorded_at=recorded_at, **who)

    def lift_rule(
        self, rule: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if rule not in self.state_at(effective_at).rules_on:
            raise Rejected(f"{rule} is not in force in {self.code} at {iso(effective_at)}")
        self._rule_lifted(rule=rule, effective_at=effective_at, recorded_at=recorded_at, **who)

    def authorize_partner(
        self, partner: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if partner in self.state_at(effective_at).partners:
            raise Rejected(f"{partner!r} is already an authorized partner in {self.code}")
        self._partner_authorized(
            partner=partner, effective_at=effective_at, recorded_at=recorded_at, **who
        )

    # -- events: the bodies run when triggered and again on every replay ---------------

    @event("RegionRuleApplied", topic="entitlements:RegionRuleApplied")
    def _rule_applied(
        self,
        rule: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember("RegionRuleApplied", effective_at, recorded_at, actor, command_id, rule=rule)

    @event("RegionRuleLifted", topic="entitlements:RegionRuleLifted")
    def _rule_lifted(
        self,
        rule: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember("RegionRuleLifted", effective_at, recorded_at, actor, command_id, rule=rule)

    @event("PartnerAuthorized", topic="entitlements:PartnerAuthorized")
    def _partner_authorized(
        self,
        partner: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "PartnerAuthorized", effective_at, recorded_at, actor, command_id, partner=partner
        )

    def _remember(
        self,
        type_: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None,
        command_id: str | None,
        **data: Any,
    ) -> None:
        """Keep the event as a Fact, in effective order. (An event body runs before the
        aggregate's version moves on, hence version + 1; the created event is version 1.)"""
        version = self.version + 1 if self.facts else 1
        fact = Fact(
            f"region:{self.code}",
            type_,
            version,
            effective_at,
            recorded_at,
            with_who(data, actor, command_id),
        )
        bisect.insort(self.facts, fact, key=lambda f: f.order)
