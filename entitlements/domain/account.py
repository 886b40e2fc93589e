"""The account aggregate: registration, plan, hosting, suspension, each with both clocks.

Every command is validated against the account's state at its own effective time, as
known now (all recorded events, future-effective ones included), then recorded as an
event. Region-wide hosting rules reach the account as its own HostingRevoked /
HostingRestored events (see `FollowsOtherStreams.reconcile_hosting`), so one account's history explains it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from entitlements.domain import events as ev
from entitlements.domain.event_facts import KeepsFacts
from entitlements.domain.region import Region, RegionRules
from entitlements.domain.rules import (
    CHANNEL_CLOSED_BY,
    ISOLATION_RULE,
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
    rule_cause,
)
from entitlements.domain.times import iso


def account_uuid(account_id: str) -> UUID:
    """Account aggregates have stable ids derived from the account id."""
    return ev.stable_id("account", account_id)


def _check_channel(
    rules: RegionState, plan: str, channel: str, partner: str | None, region: str
) -> None:
    """A paid product through a channel a region rule closed, or an unknown partner."""
    closed_by = CHANNEL_CLOSED_BY.get(channel)
    if plan in PAID_PLANS and closed_by in rules.rules_on:
        raise Rejected(f"the {channel} channel is closed in {region} ({closed_by})")
    if channel == "partner" and partner not in rules.partners:
        raise Rejected(f"partner {partner!r} is not authorized in {region}")


#: What refuses a command, by the event it would record: (refused in this state, the reason,
#: with the account's id and the command's effective time put in). Checked on the state at
#: the command's own effective time (`Account.state_for_command`).
_REFUSED: dict[str, tuple[tuple[Callable[[AccountState], bool], str], ...]] = {
    ev.REGISTRATION_APPROVED: (
        (
            lambda s: s.registration_suspended is None,
            "registration of {id} is not suspended at {at}",
        ),
    ),
    ev.SUBSCRIPTION_OPENED: (
        (lambda s: s.suspension is not None, "account {id} is suspended at {at}"),
        (
            lambda s: s.registration_suspended is not None,
            "registration of {id} is suspended: approve it first",
        ),
    ),
    ev.SUBSCRIPTION_CLOSED: (
        (lambda s: s.plan == "free", "account {id} is already on the free plan at {at}"),
    ),
    ev.HOSTING_REVOKED: (
        (lambda s: s.manual_revocation is not None, "hosting of {id} is already revoked at {at}"),
    ),
    ev.HOSTING_RESTORED: (
        (
            lambda s: s.manual_revocation is None,
            "no manual hosting revocation of {id} is in force at {at} "
            "(a rule-caused one ends with the rule or the free plan)",
        ),
    ),
    ev.ACCOUNT_REINSTATED: (
        (lambda s: s.suspension is None, "account {id} is not suspended at {at}"),
    ),
}


def _check_refused(state: AccountState, records: str, account_id: str, at: datetime) -> None:
    """Reject a command that would record `records` when `state` refuses it (_REFUSED)."""
    for refused, reason in _REFUSED[records]:
        if refused(state):
            raise Rejected(reason.format(id=account_id, at=iso(at)))


def _check_choice(
    state: AccountState, regions: Sequence[Region | RegionRules], account_id: str, at: datetime
) -> None:
    """`choose_data_regions` refused (rule 10's command): the account suspended, not on a
    paid plan, or a listed region other than its own isolated, each at `at`."""
    if state.suspension is not None:
        raise Rejected(f"account {account_id} is suspended at {iso(at)}")
    if state.plan not in PAID_PLANS:
        raise Rejected(
            f"account {account_id} is on the {state.plan} plan at {iso(at)}: "
            "only a paid plan chooses its data regions"
        )
    for r in regions:
        if r.code != state.region and ISOLATION_RULE in r.state_at(at).rules_on:
            raise Rejected(
                f"{r.code} is {ISOLATION_RULE} at {iso(at)}: its data centres carry only "
                f"{r.code}'s own accounts, not {account_id} in {state.region}"
            )


class FollowsOtherStreams:
    """An account's commands that read other streams than its own: the region's hosting
    rule recorded as the account's own events, and the data-centre regions it chooses
    (checked against each region's isolation). A plain mixin of `Account` (its events are
    Account's own), which keeps the aggregate's class to its own commands and events."""

    # (Account's: its facts, its id, its state for a command and its events)
    facts: list[Fact]
    account_id: str
    state_for_command: Callable[[datetime], AccountState]
    _hosting_revoked: Callable[..., None]
    _hosting_restored: Callable[..., None]
    _data_regions_chosen: Callable[..., None]

    def reconcile_hosting(
        self, region: Region | RegionRules, recorded_at: datetime, who: Who = NOBODY
    ) -> int:
        """Record the region's hosting rule as this account's own events, wherever its
        history disagrees with rule 3 (see rules.hosting_corrections). Idempotent.
        Returns how many events it recorded."""
        corrections = hosting_corrections(self.facts, region.facts, recorded_at)
        for f in corrections:
            record = (
                self._hosting_revoked if f.type == ev.HOSTING_REVOKED else self._hosting_restored
            )
            record(f.data["reason"], f.effective_at, recorded_at, dict(f.cause or {}), **who)
        return len(corrections)

    def choose_data_regions(
        self,
        regions: Sequence[Region | RegionRules],
        effective_at: datetime,
        recorded_at: datetime,
        who: Who = NOBODY,
    ) -> None:
        """Rule 10's command: the data-centre regions that may carry a paid account's
        meetings, each checked against its isolation at `effective_at`."""
        _check_choice(self.state_for_command(effective_at), regions, self.account_id, effective_at)
        codes = [r.code for r in regions]
        self._data_regions_chosen(codes, effective_at, recorded_at, **who)


class Account(FollowsOtherStreams, KeepsFacts):
    """One account's registration, plan, hosting and suspension history."""

    TOPIC = ev.topic("Account")  # explicit, stable topics: modules can move, the log stays

    class Created(Aggregate.Created):  # the library's base "created" class; never stored
        TOPIC = ev.topic("Account.Created")

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
        # (arguments by position: the library binds them to the event's fields by name)
        account = cls(
            account_id, region.code, plan, channel, partner, effective_at, recorded_at, **who
        )
        suspension = rules.rules_on.get("registration_suspended")
        if suspension and not (plan == "enterprise" and channel in SALES_CHANNELS):
            account._registration_suspended(
                effective_at, recorded_at, rule_cause(suspension), **who
            )
        return account

    @event(ev.ACCOUNT_REGISTERED, topic=ev.topic(ev.ACCOUNT_REGISTERED))
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
        self.facts: list[Fact] = []  # (filled by _remember)
        self._remember(ev.ACCOUNT_REGISTERED, locals())

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
        self._check(ev.REGISTRATION_APPROVED, effective_at)
        _check_channel(region.state_at(effective_at), plan, channel, partner, self.region)
        self._registration_approved(plan, channel, partner, effective_at, recorded_at, **who)

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
        self._check(ev.SUBSCRIPTION_OPENED, effective_at)
        _check_channel(region.state_at(effective_at), plan, channel, partner, self.region)
        self._subscription_opened(plan, channel, partner, effective_at, recorded_at, **who)

    def close_subscription(
        self, reason: str | None, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        self._check(ev.SUBSCRIPTION_CLOSED, effective_at)
        self._subscription_closed(reason, effective_at, recorded_at, **who)

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
        self._moved_to_partner(partner, effective_at, recorded_at, **who)

    # -- hosting and suspension ----------------------------------------------------------

    def revoke_hosting(
        self, reason: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        self._check(ev.HOSTING_REVOKED, effective_at)
        self._hosting_revoked(reason, effective_at, recorded_at, None, **who)

    def restore_hosting(
        self, reason: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        self._check(ev.HOSTING_RESTORED, effective_at)
        self._hosting_restored(reason, effective_at, recorded_at, None, **who)

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
        self._suspended(jurisdiction, reason, effective_at, recorded_at, **who)

    def reinstate(
        self, reason: str, effective_at: datetime, recorded_at: datetime, who: Who = NOBODY
    ) -> None:
        self._check(ev.ACCOUNT_REINSTATED, effective_at)
        self._reinstated(reason, effective_at, recorded_at, **who)

    def accept_request_from(self, jurisdiction: str | None) -> None:
        """A region's request never reaches an account outside it (the platform's reaches all)."""
        check_jurisdiction(jurisdiction, self.region, self.account_id)

    # -- what the account says at a time -------------------------------------------------

    @property
    def stream(self) -> str:
        return f"account:{self.account_id}"

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

    def _check(self, records: str, effective_at: datetime) -> None:
        """A command that would record `records` at `effective_at`, rejected if refused."""
        _check_refused(self.state_for_command(effective_at), records, self.account_id, effective_at)

    # -- events: the bodies run when triggered and on every replay. Each keeps who asked,
    # `actor` and `command_id` (None in events from before them, which replay unchanged).

    @event(ev.REGISTRATION_SUSPENDED, topic=ev.topic(ev.REGISTRATION_SUSPENDED))
    def _registration_suspended(
        self,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any],
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.REGISTRATION_SUSPENDED, locals())

    @event(ev.REGISTRATION_APPROVED, topic=ev.topic(ev.REGISTRATION_APPROVED))
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
        self._remember(ev.REGISTRATION_APPROVED, locals())

    @event(ev.SUBSCRIPTION_OPENED, topic=ev.topic(ev.SUBSCRIPTION_OPENED))
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
        self._remember(ev.SUBSCRIPTION_OPENED, locals())

    @event(ev.SUBSCRIPTION_CLOSED, topic=ev.topic(ev.SUBSCRIPTION_CLOSED))
    def _subscription_closed(
        self,
        reason: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.SUBSCRIPTION_CLOSED, locals())

    @event(ev.MOVED_TO_PARTNER, topic=ev.topic(ev.MOVED_TO_PARTNER))
    def _moved_to_partner(
        self,
        partner: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.MOVED_TO_PARTNER, locals())

    @event(ev.HOSTING_REVOKED, topic=ev.topic(ev.HOSTING_REVOKED))
    def _hosting_revoked(
        self,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any] | None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.HOSTING_REVOKED, locals())

    @event(ev.HOSTING_RESTORED, topic=ev.topic(ev.HOSTING_RESTORED))
    def _hosting_restored(
        self,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        cause: dict[str, Any] | None,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.HOSTING_RESTORED, locals())

    @event(ev.ACCOUNT_SUSPENDED, topic=ev.topic(ev.ACCOUNT_SUSPENDED))
    def _suspended(
        self,
        jurisdiction: str,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.ACCOUNT_SUSPENDED, locals())

    @event(ev.DATA_REGIONS_CHOSEN, topic=ev.topic(ev.DATA_REGIONS_CHOSEN))
    def _data_regions_chosen(
        self,
        regions: list[str],
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.DATA_REGIONS_CHOSEN, locals())

    @event(ev.ACCOUNT_REINSTATED, topic=ev.topic(ev.ACCOUNT_REINSTATED))
    def _reinstated(
        self,
        reason: str,
        effective_at: datetime,
        recorded_at: datetime,
        actor: str | None = None,
        command_id: str | None = None,
    ) -> None:
        self._remember(ev.ACCOUNT_REINSTATED, locals())
