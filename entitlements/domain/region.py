"""The region aggregate: its rules (switched on and off at effective times) and partners."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from entitlements.domain.event_facts import KeepsFacts
from entitlements.domain.events import (
    PARTNER_AUTHORIZED,
    REGION_OPENED,
    REGION_RULE_APPLIED,
    REGION_RULE_LIFTED,
    stable_id,
    topic,
)
from entitlements.domain.rules import (
    NOBODY,
    Fact,
    RegionState,
    Rejected,
    Who,
    fold_region,
)
from entitlements.domain.times import iso


def region_id(code: str) -> UUID:
    """Region aggregates have stable ids derived from their code."""
    return stable_id("region", code)


@dataclass(frozen=True)
class RegionRules:
    """A region's events as account commands read them (no aggregate needed): its code and
    facts in effective order. The Region aggregate offers the same two attributes."""

    code: str
    facts: Sequence[Fact]

    def state_at(self, at: datetime | None = None, known: datetime | None = None) -> RegionState:
        return fold_region(self.code, self.facts, at, known)


class Region(KeepsFacts):
    """A region's rule switches and authorized partners, each with both clocks."""

    TOPIC = topic("Region")  # explicit, stable topics: modules can move, the log stays

    class Created(Aggregate.Created):  # the library's base "created" class; never stored
        TOPIC = topic("Region.Created")

    @staticmethod
    def create_id(region: str) -> UUID:
        return region_id(region)

    @event(REGION_OPENED, topic=topic(REGION_OPENED))
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
        self._remember(REGION_OPENED, locals())

    # -- what the region says at a time ------------------------------------------------

    @property
    def stream(self) -> str:
        return f"region:{self.code}"

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

    @event(REGION_RULE_APPLIED, topic=topic(REGION_RULE_APPLIED))
    def _rule_applied(
        self,
        rule: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(REGION_RULE_APPLIED, locals())

    @event(REGION_RULE_LIFTED, topic=topic(REGION_RULE_LIFTED))
    def _rule_lifted(
        self,
        rule: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(REGION_RULE_LIFTED, locals())

    @event(PARTNER_AUTHORIZED, topic=topic(PARTNER_AUTHORIZED))
    def _partner_authorized(
        self,
        partner: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(PARTNER_AUTHORIZED, locals())
