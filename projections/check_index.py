"""The hot path: checks answered from timelines in memory, never from the store.

- "now" (no `at`, no `as_known_at`): one dict lookup and a clock comparison return a
  ready, immutable Decision. Each cached entry expires at the account's (or its region's)
  next effective change point, so a future-effective event takes effect on time with no
  new event recorded (rule 9).
- `at` / `as_known_at`: two bisects per timeline, then a memoised Decision for that
  (account state, region state) cell.

Updates come from `update(facts, changed)` (catch-up, follow, rebuild); an account's
timeline is rebuilt on its next check, not in the update. Readers take no lock; writers of the caches hold one, and a generation counter keeps a check that raced
an update from caching a stale answer.
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from time import time
from typing import Any

from entitlements.commands import parse_time
from entitlements.decisions import Decision, UnknownAccount
from entitlements.rules import (
    CAPABILITIES,
    AccountState,
    Fact,
    RegionState,
    UnknownCapability,
    decide,
)
from projections.facts import Changed, LogFacts
from projections.timeline import EMPTY_REGION, Timeline, account_timeline, region_timeline

CACHE_SIZE = 1 << 21  # "now" entries and memoised cells kept, each (oldest evicted first)
SLOTS = {cap: i for i, cap in enumerate(CAPABILITIES)}

#: A "now" entry: valid until (epoch seconds), the states, one decision slot per capability.
NowEntry = tuple[float, AccountState, RegionState, list[Decision | None]]


class CheckIndex:
    """Every account's and region's timeline, and the decisions already made from them."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.position = 0
        # account -> (region, its Timeline), or (region, its facts) until first asked about:
        # timelines are built on first use, so a fan-out or a start-up does not build them
        # for a million accounts at once, and accounts never checked cost no timeline.
        self.accounts: dict[str, tuple[str, Timeline[AccountState] | list[Fact]]] = {}
        self.regions: dict[str, Timeline[RegionState]] = {}
        self.cache_size = cache_size
        self._now: dict[str, NowEntry] = {}
        self._cells: dict[tuple[AccountState, RegionState, str], Decision] = {}
        self._generation = 0
        self._lock = threading.Lock()

    # -- updates -------------------------------------------------------------------------

    def update(self, facts: LogFacts, changed: Changed) -> None:
        """Forget the timelines and answers of the streams that changed: regions are
        rebuilt now (few, shared), accounts on their next check."""
        regions = {c: region_timeline(c, facts.regions[c]) for c in changed.regions}
        accounts = {a: (facts.region_of[a], facts.accounts[a]) for a in changed.accounts}
        with self._lock:
            self._generation += 1
            self.regions.update(regions)
            self.accounts.update(accounts)
            self.position = facts.position
            if regions:
                self._now.clear()
            else:
                for a in accounts:
                    self._now.pop(a, None)

    def timelines(self, account_id: str) -> tuple[Timeline[AccountState], Timeline[RegionState]]:
        """The account's timeline (built now if it was not yet) and its region's."""
        try:
            entry = self.accounts[account_id]
        except KeyError:
            raise UnknownAccount(account_id) from None
        region, account = entry
        if not isinstance(account, Timeline):
            account = self._build(account_id, entry)
        return account, self.regions.get(region, EMPTY_REGION)

    def _build(self, account_id: str, entry: tuple[str, Any]) -> Timeline[AccountState]:
        region, facts = entry
        timeline = account_timeline(facts)
        with self._lock:  # keep it only if no update came in meanwhile
            if self.accounts.get(account_id) is entry:
                self.accounts[account_id] = (region, timeline)
        return timeline

    def replace(
        self,
        accounts: dict[str, tuple[str, Timeline[AccountState] | list[Fact]]],
        regions: dict[str, Timeline[RegionState]],
        position: int,
    ) -> None:
        """Adopt timelines saved in a snapshot."""
        with self._lock:
            self._generation += 1
            self.accounts, self.regions, self.position = accounts, regions, position
            self._now.clear()
            self._cells.clear()

    # -- checks --------------------------------------------------------------------------

    def check(
        self,
        account_id: str,
        capability: str,
        at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
    ) -> Decision:
        if at is None and as_known_at is None:
            try:
                until, _, _, decisions = self._now[account_id]
                if until > time():  # the one clock read that keeps "now" exact (rule 9)
                    decision = decisions[SLOTS[capability]]
                    if decision is not None:
                        return decision
            except KeyError:  # not cached yet, or not a capability: the slow path says which
                pass
            return self._check_now(account_id, capability)
        return self._check_at(account_id, capability, at, as_known_at)

    def capabilities(
        self,
        account_id: str,
        at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
    ) -> list[Decision]:
        return [self.check(account_id, cap, at, as_known_at) for cap in CAPABILITIES]

    def _check_now(self, account_id: str, capability: str) -> Decision:
        """Decide for now, and cache it until the account's or region's next change point."""
        slot = SLOTS.get(capability)
        if slot is None:
            raise UnknownCapability(capability)
        generation = self._generation
        entry = self._now.get(account_id)
        if entry is None or entry[0] <= time():
            account, region = self.timelines(account_id)
            t = datetime.now(UTC)
            changes = [c for c in (account.next_change(t), region.next_change(t)) if c is not None]
            until = min(changes).timestamp() if changes else math.inf
            entry = (until, account.state_at(t), region.state_at(t), [None] * len(SLOTS))
        decision = Decision.of(
            account_id, capability, decide(capability, entry[1], entry[2]), self.position
        )
        entry[3][slot] = decision
        with self._lock:
            if generation == self._generation:
                self._evict(self._now)
                self._now[account_id] = entry
        return decision

    def _check_at(
        self,
        account_id: str,
        capability: str,
        at: datetime | str | None,
        as_known_at: datetime | str | None,
    ) -> Decision:
        t = (
            at
            if isinstance(at, datetime) and at.tzinfo
            else _utc("at", at)
            if at is not None
            else datetime.now(UTC)
        )
        k = (
            as_known_at
            if as_known_at is None or isinstance(as_known_at, datetime) and as_known_at.tzinfo
            else _utc("as_known_at", as_known_at)
        )
        try:
            region, account = entry = self.accounts[account_id]
        except KeyError:
            raise UnknownAccount(account_id) from None
        if account.__class__ is not Timeline:
            account = self._build(account_id, entry)
        acc = account.state_at(t, k)  # type: ignore[union-attr]
        reg = self.regions.get(region, EMPTY_REGION).state_at(t, k)
        key = (acc, reg, capability)  # states hash by identity; the memo keeps them alive
        decision = self._cells.get(key)
        if decision is not None:
            return decision
        if capability not in SLOTS:
            raise UnknownCapability(capability)
        decision = Decision.of(account_id, capability, decide(capability, acc, reg), self.position)
        with self._lock:
            self._evict(self._cells)
            self._cells[key] = decision
        return decision

    def _evict(self, cache: dict[Any, Any]) -> None:
        while len(cache) >= self.cache_size:
            del cache[next(iter(cache))]


def _utc(field: str, value: datetime | str) -> datetime:
    """Aware datetimes pass as they are; strings and naive datetimes are read as UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    try:
        return parse_time(value)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None
