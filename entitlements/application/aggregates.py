"""The aggregates a command decides on: the group's own, else kept ones the log in memory
proves current, else loaded; and the regions' rules as this process has them."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from entitlements.application.group import Group
from entitlements.application.store_app import EntitlementsApplication
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.region import Region, RegionRules, region_id
from entitlements.domain.rules import Rejected, Who
from projections.projector import Projector

_A = TypeVar("_A", Account, Region)

AGGREGATE_CACHE = 2048  # account and region aggregates kept between groups (each kind)


class Aggregates:
    """Loads and keeps account and region aggregates for the writer's commands."""

    def __init__(self, app: EntitlementsApplication, projector: Projector) -> None:
        self.app = app
        self.projector = projector
        self._kept: OrderedDict[UUID, Account | Region] = OrderedDict()

    def account(self, account_id: str, group: Group) -> Account:
        """The account as the group left it, else as the log has it: a kept aggregate
        whose version is the newest of its facts (no store read), else loaded. (A fan-out
        saves account events without the aggregate: the version tells.)"""
        account = group.accounts.get(account_id)
        if account is None:
            log = self.projector.log
            facts = log.account_facts(account_id)
            if not facts:  # the log is level with the store, under the writer lock
                raise Rejected(f"unknown account {account_id}")
            try:
                account = self._current(
                    account_uuid(account_id), max(f.version for f in facts), Account
                )
            except AggregateNotFoundError:
                raise Rejected(f"unknown account {account_id}") from None
            log.name_stream(account.id, account_id)
        group.touched.append(account)
        return account

    def region(
        self, code: str, effective_at: datetime, recorded_at: datetime, who: Who, group: Group
    ) -> Region:
        """The region's aggregate (the group's, kept, or loaded); a new, unsaved one when
        the region has no events yet."""
        region = group.regions.get(code)
        if region is None:
            facts = self.projector.log.regions.get(code)
            if not facts:
                return Region(
                    region=code, effective_at=effective_at, recorded_at=recorded_at, **who
                )
            region = self._current(region_id(code), max(f.version for f in facts), Region)
        group.touched.append(region)
        return region

    def _current(self, aggregate_id: UUID, version: int, kind: type[_A]) -> _A:
        """The kept aggregate if it is at `version`, else loaded (and kept)."""
        kept = self._kept.get(aggregate_id)
        aggregate: _A
        if isinstance(kept, kind) and kept.version == version:
            aggregate = kept
        else:
            aggregate = self.app.repository.get(aggregate_id)
        self._keep(aggregate)
        return aggregate

    def _keep(self, aggregate: Account | Region) -> None:
        self._kept[aggregate.id] = aggregate
        self._kept.move_to_end(aggregate.id)
        if len(self._kept) > 2 * AGGREGATE_CACHE:
            self._kept.popitem(last=False)

    def rules(self, code: str, group: Group | None = None) -> Region | RegionRules:
        """The region as the group left it, else its events as this process has caught up
        with them (no store read)."""
        if group is not None and code in group.regions:
            return group.regions[code]
        return RegionRules(code, tuple(self.projector.log.region_facts(code)))

    def region_of(self, account_id: str | None, group: Group) -> str | None:
        """The account's region, as the group left it or as the log has it."""
        if account_id is None:
            return None
        if account_id in group.accounts:
            return group.accounts[account_id].region
        return self.projector.log.account_region(account_id)

    def keep(self, group: Group) -> None:
        """The group committed: its aggregates are current, kept for the next commands."""
        for account in group.accounts.values():
            self._keep(account)
        for region in group.regions.values():
            self._keep(region)

    def forget(self, group: Group) -> None:
        """A group that did not commit: its aggregates carry events the log lacks."""
        for aggregate in (*group.accounts.values(), *group.regions.values(), *group.touched):
            self._kept.pop(aggregate.id, None)
