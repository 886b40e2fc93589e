"""The account aggregate: registration, plan, hosting, suspension, each with both clocks.

Every command is validated against the account's state at its own effective time, as
known now (all recorded events, future-effective ones included), then recorded as an
event. Region-wide hosting rules reach the account as its own HostingRevoked /
HostingRestored events (see `reconcile_hosting`), so one account's history explains it.
"""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from entitlements.domain.region import Region, RegionRules
from entitlements.domain.rules import (
    CHANNEL_CLOSED_BY,
    NOBODY,
    PAID_PLANS,
    SALES_CHANNELS,
    AccountState,
    Fact,
    RegionState,
    Rejected,
    Who,
    check_jurisdiction,
    fold_account,
    hosting_corrections,
    iso,
    rule_cause,
    with_who,
)


def account_uuid(account_id: str) -> UUID:
    """Account aggregates have stable ids derived from the account id."""
    return uuid5(NAMESPACE_URL, f"entitlements:account:{account_id}")


def _check_channel(
    rules: RegionState, plan: str, channel: str, partner: str | None, region: str
) -> None:
    """A paid product through a channel a region rule closed, or an unknown partner."""
    closed_by = CHANNEL_CLOSED_BY.get(channel)
    if plan in PAID_PLANS and closed_by in rules.rules_on:
        raise Rejected(f"the {channel} channel is closed in {region} ({closed_by})")
    if channel == "partner" and partner not in rules.partners:
        raise Rejected(f"partner {partner!r} is not authorized in {region}")


class Account(Aggregate):
    """One account's registration, plan, hosting and suspension history."""

    TOPIC = "entitlements:Account"  # explicit, stable topics: modules can move, the log stays

    class Created(Aggregate.Created):  # the library's base "created" class; never stored
        TOPIC = "entitlements:Account.Created"

    @staticmethod
    def create_id(account_id: str) -> UUID:
        return account_uuid(account_id)

    # -- registration --------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        account_id: str,
        region: Region | RegionRules,
        plan: str,
        channel: str,
        partner: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        who: Who = NOBODY,
    ) -> Account:
        """Register, or record the attempt as suspended when the region suspends sign-ups."""
        rules = region.state_at(effective_at)
        _check_channel(rules, plan, channel, partner, region.code)
        if plan == "free" and channel != "online":
            raise Rejected(f"a free plan is only available online, not through {channel}")
        account = cls(
            account_id=account_id,
            region=region.code,
            plan=plan,
            channel=channel,
            partner=partner,
            effective_at=effective_at,
            recorded_at=recorded_at,
            **who,
        )
        suspension = rules.rules_on.get("registration_suspended")
        if suspension and not (plan == "enterprise" and channel in SALES_CHANNELS):
            account._registration_suspended(
                effective_at=effective_at,
                recorded_at=recorded_at,
                cause=rule_cause(suspension),
                **who,
            )
        return account

    @event("AccountRegistered", topic="entitlements:AccountRegistered")
    def __init__(
        self,
        account_id: str,
        region: str,
        plan: str,
        channel: str,
        partner: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.registered_at = effective_at
        self.facts: list[Fact] = []
        self._remember(
            "AccountRegistered",
            effective_at,
            recorded_at,
            None,
            actor,
            command_id,
            region=region,
            plan=plan,
            channel=channel,
            partner=partner,
        )

    def approve_registration(
        self,
        region: Region | RegionRules,
        plan: str,
        channel: str,
        partner: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        who: Who = NOBODY,
    ) -> None:
        state = self.state_for_command(effective_at)
        if state.registration_suspended is None:
            raise Rejected(
                f"registration of {self.account_id} is not suspended at {iso(effective_at)}"
            )
        _check_channel(region.state_at(effective_at), plan, channel, partner, self.region)
        self._registration_approved(
            plan=plan,
            channel=channel,
            partner=partner,
            effective_at=effective_at,
            recorded_at=recorded_at,
            **who,
        )

    # -- subscriptions and channel -------------------------------------------------------

    def open_subscription(
        self,
        region: Region | RegionRules,
        plan: str,
        channel: str,
        partner: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        who: Who = NOBODY,
    ) -> None:
        state = self.state_for_command(effective_at)
        if state.suspension is not None:
            raise Rejected(f"account {self.account_id} is suspended at {iso(effective_at)}")
        if state.registration_suspended is not None:
            raise Rejected(f"registration of {self.account_id} is suspended: approve it first")
        _check_channel(region.state_at(effective_at), plan, channel, partner, self.region)
        self._subscription_opened(
            plan=plan,
            channel=channel,
            partner=partner,
            effective_at=effective_at,
            recorded_at=recorded_at,
            **who,
        )

    def close_subscription(
        self, reason: str | None, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if self.state_for_command(effective_at).plan == "free":
            raise Rejected(
                f"account {self.account_id} is already on the free plan at {iso(effective_at)}"
            )
        self._subscription_closed(
            reason=reason, effective_at=effective_at, recorded_at=recorded_at, **who
        )

    def move_to_partner(
        self,
        region: Region | RegionRules,
        partner: str,
        effective_at: datetime,
        recorded_at: datetime,
        who: Who = NOBODY,
    ) -> None:
        state = self.state_for_command(effective_at)
        if partner not in region.state_at(effective_at).partners:
            raise Rejected(
                f"partner {partner!r} is not authorized in {self.region} at {iso(effective_at)}"
            )
        if state.plan == "free":
            raise Rejected(f"account {self.account_id} is on the free plan: nothing to move")
        if state.channel == "partner" and state.partner == partner:
            raise Rejected(f"account {self.account_id} is already with {partner!r}")
        self._moved_to_partner(
            partner=partner, effective_at=effective_at, recorded_at=recorded_at, **who
        )

    # -- hosting and suspension ----------------------------------------------------------

    def revoke_hosting(
        self, reason: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if self.state_for_command(effective_at).manual_revocation is not None:
            raise Rejected(
                f"hosting of {self.account_id} is already revoked at {iso(effective_at)}"
            )
        self._hosting_revoked(
            reason=reason, effective_at=effective_at, recorded_at=recorded_at, cause=None, **who
        )

    def restore_hosting(
        self, reason: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if self.state_for_command(effective_at).manual_revocation is None:
            raise Rejected(
                f"no manual hosting revocation of {self.account_id} is in force at "
                f"{iso(effective_at)} (a rule-caused one ends with the rule or the free plan)"
            )
        self._hosting_restored(
            reason=reason, effective_at=effective_at, recorded_at=recorded_at, cause=None, **who
        )

    def suspend(
        self,
        jurisdiction: str,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        who: Who = NOBODY,
    ) -> None:
        state = self.state_for_command(effective_at)
        self.accept_request_from(jurisdiction)
        if state.suspension is not None:
            raise Rejected(f"account {self.account_id} is already suspended at {iso(effective_at)}")
        self._suspended(
            jurisdiction=jurisdiction,
            reason=reason,
            effective_at=effective_at,
            recorded_at=recorded_at,
            **who,
        )

    def reinstate(
        self, reason: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        if self.state_for_command(effective_at).suspension is None:
            raise Rejected(f"account {self.account_id} is not suspended at {iso(effective_at)}")
        self._reinstated(reason=reason, effective_at=effective_at, recorded_at=recorded_at, **who)

    def accept_request_from(self, jurisdiction: str | None) -> None:
        """A request under a region's jurisdiction never reaches an account outside that
        region, whatever the command; the platform (or no jurisdiction given) reaches all."""
        check_jurisdiction(jurisdiction, self.region, self.account_id)

    # -- the region's hosting rule, as this account's own events -------------------------

    def reconcile_hosting(
        self, region: Region | RegionRules, recorded_at: datetime, who: Who = NOBODY
    ) -> int:
        """Record the region's hosting rule as this account's own events, wherever its
        history disagrees with rule 3 (see rules.hosting_corrections). Idempotent.
        Returns how many events it recorded."""
        corrections = hosting_corrections(self.facts, region.facts, recorded_at)
        for f in corrections:
            record = self._hosting_revoked if f.type == "HostingRevoked" else self._hosting_restored
            record(
                reason=f.data["reason"],
                effective_at=f.effective_at,
                recorded_at=recorded_at,
                cause=dict(f.cause or {}),
                **who,
            )
        return len(corrections)

    @classmethod
    def event_from_fact(
        cls,
        account_id: str,
        fact: Fact,
        who: Who = NOBODY,
        originator_id: UUID | None = None,
        timestamp: datetime | None = None,
    ) -> Aggregate.Event:
        """The event a rule-caused correction (rules.hosting_corrections) is recorded as,
        without the aggregate: a fan-out over many accounts reads their facts, not their
        aggregates. The same event `reconcile_hosting` would trigger on the aggregate.
        `originator_id`: the account's aggregate id when the caller knows it already;
        `timestamp`: the library's creation time, when one is shared by a whole batch."""
        if fact.type not in ("HostingRevoked", "HostingRestored"):
            raise ValueError(f"not a hosting correction: {fact.type}")
        event_class = getattr(cls, fact.type)  # made by @event
        made: Aggregate.Event = event_class(
            originator_id=originator_id or account_uuid(account_id),
            originator_version=fact.version,
            timestamp=timestamp or event_class.create_timestamp(),
            reason=fact.data["reason"],
            effective_at=fact.effective_at,
            recorded_at=fact.recorded_at,
            cause=dict(fact.cause or {}),
            actor=who.get("actor"),
            command_id=who.get("command_id"),
        )
        return made

    # -- what the account says at a time -------------------------------------------------

    def state_at(self, at: datetime | None = None, known: datetime | None = None) -> AccountState:
        return fold_account(self.facts, at, known)

    def state_for_command(self, effective_at: datetime) -> AccountState:
        """The state a command is validated against; none exists before registration."""
        if effective_at < self.registered_at:
            raise Rejected(
                f"{iso(effective_at)} is before account {self.account_id} was registered "
                f"({iso(self.registered_at)})"
            )
        return self.state_at(effective_at)

    # -- events: the bodies run when triggered and again on every replay ---------------
    # Each also keeps who asked: the command's `actor` and `command_id` (None in events
    # recorded before they existed, which therefore replay unchanged).

    @event("RegistrationSuspended", topic="entitlements:RegistrationSuspended")
    def _registration_suspended(
        self,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any],
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember("RegistrationSuspended", effective_at, recorded_at, cause, actor, command_id)

    @event("RegistrationApproved", topic="entitlements:RegistrationApproved")
    def _registration_approved(
        self,
        plan: str,
        channel: str,
        partner: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "RegistrationApproved",
            effective_at,
            recorded_at,
            None,
            actor,
            command_id,
            plan=plan,
            channel=channel,
            partner=partner,
        )

    @event("SubscriptionOpened", topic="entitlements:SubscriptionOpened")
    def _subscription_opened(
        self,
        plan: str,
        channel: str,
        partner: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "SubscriptionOpened",
            effective_at,
            recorded_at,
            None,
            actor,
            command_id,
            plan=plan,
            channel=channel,
            partner=partner,
        )

    @event("SubscriptionClosed", topic="entitlements:SubscriptionClosed")
    def _subscription_closed(
        self,
        reason: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "SubscriptionClosed", effective_at, recorded_at, None, actor, command_id, reason=reason
        )

    @event("MovedToPartner", topic="entitlements:MovedToPartner")
    def _moved_to_partner(
        self,
        partner: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "MovedToPartner", effective_at, recorded_at, None, actor, command_id, partner=partner
        )

    @event("HostingRevoked", topic="entitlements:HostingRevoked")
    def _hosting_revoked(
        self,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any] | None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "HostingRevoked", effective_at, recorded_at, cause, actor, command_id, reason=reason
        )

    @event("HostingRestored", topic="entitlements:HostingRestored")
    def _hosting_restored(
        self,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any] | None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "HostingRestored", effective_at, recorded_at, cause, actor, command_id, reason=reason
        )

    @event("AccountSuspended", topic="entitlements:AccountSuspended")
    def _suspended(
        self,
        jurisdiction: str,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "AccountSuspended",
            effective_at,
            recorded_at,
            None,
            actor,
            command_id,
            jurisdiction=jurisdiction,
            reason=reason,
        )

    @event("AccountReinstated", topic="entitlements:AccountReinstated")
    def _reinstated(
        self,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(
            "AccountReinstated", effective_at, recorded_at, None, actor, command_id, reason=reason
        )

    def _remember(
        self,
        type_: str,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any] | None,
        actor: str | None,
        command_id: str | None,
        **data: Any,
    ) -> None:
        """Keep the event as a Fact, in effective order. (An event body runs before the
        aggregate's version moves on, hence version + 1; the created event is version 1.)"""
        version = self.version + 1 if self.facts else 1
        fact = Fact(
            f"account:{self.account_id}",
            type_,
            version,
            effective_at,
            recorded_at,
            with_who(data, actor, command_id),
            cause,
        )
        bisect.insort(self.facts, fact, key=lambda f: f.order)
