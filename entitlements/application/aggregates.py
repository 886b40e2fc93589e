"""The aggregates a command decides on: the group's own, else kept ones the log in memory
proves current, else loaded; and the regions' rules as this process has them.

The keeping is eventsourcing's: a `Repository` with its LRU cache (`cache_maxsize`), which
loads on a miss and keeps what it loaded. Three things are set otherwise than the
library's defaults, each for a reason measured or forced by the group commit:

- `fastforward=False`: the library's fast-forward reads the store on every hit (one
  SELECT of the stream's newer events: about 80 us on SQLite, 1.4 ms on PostgreSQL,
  against about 350 us a whole command in a bulk apply). The writer decides under the
  writer lock with the log in memory level with the store, whose newest version of the
  stream tells without a read whether the kept aggregate is current; it is dropped and
  loaded again only when it is not (a fan-out or another writer saved events without it).
- `deepcopy_from_cache=False`: a copy per command (about 115 us an account of two events)
  would only protect the kept aggregate from a group that fails to commit; such a group
  drops what it touched instead (`forget`), so no aggregate with uncommitted events stays.
- the cache is filled after the group's commit (`keep`): the library fills it on save only
  for aggregates handed to `Application.save` (and only without fast-forward), and the
  group goes in as one object (see group.py).

It is a repository of its own, not the application's (`AGGREGATE_CACHE_MAXSIZE` in its
env): `app.repository` serves `history`, the audit and tools, which must read what the
store holds; without fast-forward its cache would answer them stale after a fan-out or
another process's write, and with it every read goes to the store anyway.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Repository

from entitlements.application.group import Group
from entitlements.application.store_app import EntitlementsApplication
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.region import Region, RegionRules, region_id
from entitlements.domain.rules import Rejected, Who
from projections.projector import Projector

_A = TypeVar("_A", Account, Region)

AGGREGATE_CACHE = 4096  # account and region aggregates kept between groups


class Aggregates:
    """Loads and keeps account and region aggregates for the writer's commands."""

    def __init__(self, app: EntitlementsApplication, projector: Projector) -> None:
        self.projector = projector
        self.repository: Repository[UUID] = Repository(
            app.events,
            cache_maxsize=AGGREGATE_CACHE,
            fastforward=False,
            deepcopy_from_cache=False,
        )

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
        aggregate: _A = self.repository.get(aggregate_id)
        if aggregate.version != version:  # events saved without it: load it again
            self._drop(aggregate_id)
            aggregate = self.repository.get(aggregate_id)
        return aggregate

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
        cache = self.repository.cache
        assert cache is not None
        for aggregate in (*group.accounts.values(), *group.regions.values()):
            cache.put(aggregate.id, aggregate)

    def forget(self, group: Group) -> None:
        """A group that did not commit: its aggregates carry events the log lacks."""
        for aggregate in (*group.accounts.values(), *group.regions.values(), *group.touched):
            self._drop(aggregate.id)

    def _drop(self, aggregate_id: UUID) -> None:
        cache = self.repository.cache
        assert cache is not None
        with suppress(KeyError):
            cache.get(aggregate_id, evict=True)
