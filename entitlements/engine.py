"""The application service: apply commands (load, decide, save), fan out region rules,
and answer checks, history and capabilities.

    engine = open_engine("sqlite:///entitlements.db")
    engine.apply([{"command": "register_account", ...}])
    engine.check("cn-free-01", "host", at="2020-05-19")
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from entitlements import commands as c
from entitlements.account import Account, account_uuid
from entitlements.commands import now, parse_commands, parse_time
from entitlements.decisions import CommandResult, Decision, UnknownAccount
from entitlements.region import Region, region_id
from entitlements.rules import (
    CAPABILITIES,
    FREE_HOSTING_RULE,
    Rejected,
    UnknownCapability,
    decide,
    fold_account,
    fold_region,
    iso,
)
from entitlements.store import eventsourcing_env, store_url

FAN_OUT_BATCH = 500  # accounts saved per transaction when a region rule fans out
RETRIES = 30  # optimistic-concurrency retries per command, with jittered backoff


class EntitlementsApplication(Application[UUID]):
    """The event store of account and region aggregates."""

    name = "Entitlements"


class AccountDirectory:
    """Which accounts each region has, read from AccountRegistered events in the log."""

    def __init__(self, app: EntitlementsApplication) -> None:
        self._app = app
        self._position = 0
        self._by_region: dict[str, list[str]] = {}

    def accounts_in(self, region: str) -> list[str]:
        self.refresh()
        return list(self._by_region.get(region, ()))

    def refresh(self) -> None:
        topic = "entitlements:AccountRegistered"
        while True:
            page = self._app.recorder.select_notifications(
                start=self._position + 1, limit=1000, topics=[topic]
            )
            for n in page:
                e = self._app.mapper.to_domain_event(n)
                self._by_region.setdefault(e.region, []).append(e.account_id)  # type: ignore[attr-defined]
                self._position = n.id
            if len(page) < 1000:
                return


class Engine:
    """Apply commands to the log and answer what each account may do."""

    def __init__(self, url: str | None = None) -> None:
        self.url = store_url(url)
        self.app = EntitlementsApplication(env=eventsourcing_env(self.url))
        self.directory = AccountDirectory(self.app)

    def close(self) -> None:
        self.app.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------

    def apply(self, commands: Iterable[Mapping[str, Any]]) -> list[CommandResult]:
        """Validate the whole batch (MalformedCommand names item and field; nothing is
        applied), then apply each command; a domain rejection is a result, not an error."""
        return self.apply_parsed(list(enumerate(parse_commands(enumerate(commands, 1), "item"), 1)))

    def apply_parsed(self, numbered: Sequence[tuple[int, Any]]) -> list[CommandResult]:
        """Apply already validated commands, in order, each in its own transaction."""
        results = []
        newest = self.newest_recorded_at()
        position = self.position()
        for n, cmd in numbered:
            recorded_at = cmd.recorded_at or now()
            try:
                if newest is not None and recorded_at < newest:
                    raise Rejected(
                        f"recorded_at {iso(recorded_at)} is earlier than the newest in the "
                        f"store ({iso(newest)})"
                    )
                position = self._execute(cmd, recorded_at) or position
            except Rejected as e:
                results.append(CommandResult(n, cmd.command, "rejected", e.reason, position))
            else:
                newest = max(newest or recorded_at, recorded_at)
                results.append(CommandResult(n, cmd.command, "applied", None, position))
        return results

    def _execute(self, cmd: Any, recorded_at: datetime) -> int | None:
        """Decide and save one command, retrying when another writer got there first."""
        for attempt in range(RETRIES):
            try:
                if isinstance(cmd, c.RegionCommand):  # type: ignore[arg-type,misc]
                    return self._execute_region_command(cmd, recorded_at)
                return self._execute_account_command(cmd, recorded_at)
            except IntegrityError:
                if attempt == RETRIES - 1:
                    raise
                _backoff(attempt)
        return None  # pragma: no cover

    def _execute_account_command(self, cmd: Any, recorded_at: datetime) -> int | None:
        eff = cmd.effective_at
        if isinstance(cmd, c.RegisterAccount):
            if account_uuid(cmd.account_id) in self.app.repository:
                raise Rejected(f"account {cmd.account_id} already exists")
            region = self._region(cmd.region, eff, recorded_at)
            account = Account.register(
                cmd.account_id, region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at
            )
        else:
            account = self._account(cmd.account_id)
            region = self._region(account.region, eff, recorded_at)
            match cmd:
                case c.ApproveRegistration():
                    account.approve_registration(region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at)
                case c.OpenSubscription():
                    account.open_subscription(region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at)
                case c.CloseSubscription():
                    account.close_subscription(cmd.reason, eff, recorded_at)
                case c.MoveToPartner():
                    account.move_to_partner(region, cmd.partner, eff, recorded_at)
                case c.RevokeHosting():
                    account.revoke_hosting(cmd.reason, eff, recorded_at)
                case c.RestoreHosting():
                    account.restore_hosting(cmd.reason, eff, recorded_at)
                case c.SuspendAccount():
                    account.suspend(cmd.jurisdiction, cmd.reason, eff, recorded_at)
                case c.ReinstateAccount():
                    account.reinstate(cmd.reason, eff, recorded_at)
        account.reconcile_hosting(region, recorded_at)
        return self._save(account)

    def _execute_region_command(self, cmd: Any, recorded_at: datetime) -> int | None:
        region = self._region(cmd.region, cmd.effective_at, recorded_at)
        match cmd:
            case c.AuthorizePartner():
                region.authorize_partner(cmd.partner, cmd.effective_at, recorded_at)
            case c.ApplyRegionRule():
                region.apply_rule(cmd.rule, cmd.effective_at, recorded_at)
            case c.LiftRegionRule():
                region.lift_rule(cmd.rule, cmd.effective_at, recorded_at)
        position = self._save(region)
        if getattr(cmd, "rule", None) == FREE_HOSTING_RULE:
            position = self.fan_out(region, recorded_at) or position
        return position

    def fan_out(self, region: Region, recorded_at: datetime) -> int | None:
        """Record the hosting rule on every account of the region, in batches; each
        account is reconciled whole or not at all, so running it again completes it."""
        position = None
        ids = self.directory.accounts_in(region.code)
        for start in range(0, len(ids), FAN_OUT_BATCH):
            batch = ids[start : start + FAN_OUT_BATCH]
            for attempt in range(RETRIES):
                changed = [a for a in map(self._account, batch) if a.reconcile_hosting(region, recorded_at)]
                try:
                    position = self._save(*changed) or position
                    break
                except IntegrityError:
                    if attempt == RETRIES - 1:
                        raise
                    _backoff(attempt)
        return position

    def _save(self, *aggregates: Account | Region) -> int | None:
        recordings = self.app.save(*aggregates)
        return recordings[-1].notification.id if recordings else None

    def _account(self, account_id: str) -> Account:
        try:
            return self.app.repository.get(account_uuid(account_id))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            raise Rejected(f"unknown account {account_id}") from None

    def _region(self, code: str, effective_at: datetime, recorded_at: datetime) -> Region:
        """The region's aggregate; a new, unsaved one when the region has no events yet."""
        try:
            return self.app.repository.get(region_id(code))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return Region(region=code, effective_at=effective_at, recorded_at=recorded_at)

    # -- the log -------------------------------------------------------------------------

    def position(self) -> int:
        """The newest log position (notification id); 0 for an empty store."""
        return self.app.recorder.max_notification_id() or 0

    def newest_recorded_at(self) -> datetime | None:
        """recorded_at of the newest event: it never decreases across the store."""
        last = self.position()
        if not last:
            return None
        (n,) = self.app.recorder.select_notifications(start=last, limit=1)
        return self.app.mapper.to_domain_event(n).recorded_at  # type: ignore[attr-defined,no-any-return]

    # -- checks --------------------------------------------------------------------------

    def check(
        self, account_id: str, capability: str,
        at: datetime | str | None = None, as_known_at: datetime | str | None = None,
    ) -> Decision:
        """What the account may do at `at` (default now) as known at `as_known_at`
        (default everything recorded)."""
        if capability not in CAPABILITIES:
            raise UnknownCapability(capability)
        return self._decide(account_id, [capability], at, as_known_at)[0]

    def capabilities(
        self, account_id: str, at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
    ) -> list[Decision]:
        """Every capability at once, in the spec's order."""
        return self._decide(account_id, list(CAPABILITIES), at, as_known_at)

    def _decide(
        self, account_id: str, capabilities: list[str],
        at: datetime | str | None, as_known_at: datetime | str | None,
    ) -> list[Decision]:
        t = _time("at", at) if at is not None else now()
        k = _time("as_known_at", as_known_at) if as_known_at is not None else None
        position = self.position()
        account = self._loaded_account(account_id)
        try:
            region_facts = self.app.repository.get(region_id(account.region)).facts
        except AggregateNotFoundError:
            region_facts = []
        acc = fold_account(account.facts, t, k)
        reg = fold_region(account.region, region_facts, t, k)
        return [
            Decision.of(account_id, cap, decide(cap, acc, reg), position, at and t, k)
            for cap in capabilities
        ]

    def history(self, account_id: str) -> list[dict[str, Any]]:
        """The account's events in log order, with both clocks and causes."""
        account = self._loaded_account(account_id)
        return [f.as_dict() for f in sorted(account.facts, key=lambda f: f.version)]

    def _loaded_account(self, account_id: str) -> Account:
        try:
            return self.app.repository.get(account_uuid(account_id))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            raise UnknownAccount(account_id) from None


def _backoff(attempt: int) -> None:
    """Another writer saved first: wait a little (randomly, so two writers part ways)."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))


def _time(field: str, value: datetime | str) -> datetime:
    try:
        return parse_time(value)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None


def open_engine(url: str | None = None) -> Engine:
    """Open the engine on a store URL (None: $ENTITLEMENTS_DB, else ./entitlements.db)."""
    return Engine(url)
