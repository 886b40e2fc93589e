"""The hot path: checks answered from timelines in memory, never from the store.

- "now" (no `at`, no `as_known_at`): one dict lookup and a clock comparison return a
  ready, immutable Decision. Each cached entry expires at the account's (or its region's)
  next effective change point, so a future-effective event takes effect on time with no
  new event recorded (rule 9).
- `at` / `as_known_at`: two bisects per timeline, then a memoised Decision for that
  (account state, region state) cell.

Updates come from `update(facts, changed)` (catch-up, follow, rebuild). Readers take no
lock; writers of the caches hold one, and a generation counter keeps a check that raced
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
from entitlements.rules import CAPABILITIES, AccountState, RegionState, UnknownCapability, decide
from projections.facts import Changed, LogFacts
from projections.timeline import EMPTY_REGION, Timeline, account_timeline, region_timeline

CACHE_SIZE = 1 << 18  # "now" entries and memoised cells kept, each (oldest evicted first)


class CheckIndex:
    """Every account's and region's timeline, and the decisions already made from them."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.position = 0
        self.accounts: dict[str, tuple[str, Timeline[AccountState]]] = {}
        self.regions: dict[str, Timeline[RegionState]] = {}
        self.cache_size = cache_size
        self._now: dict[str, tuple[float, dict[str, Decision]]] = {}
        self._cells: dict[tuple[Any, ...], tuple[AccountState, RegionState, Decision]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    # -- updates -------------------------------------------------------------------------

    def update(self, facts: LogFacts, changed: Changed) -> None:
        """Recompute the timelines of the streams that changed, and forget their answers."""
        regions = {c: region_timeline(c, facts.regions[c]) for c in changed.regions}
        accounts = {
            a: (facts.region_of[a], account_timeline(facts.accounts[a])) for a in changed.accounts
        }
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

    def replace(
        self, accounts: dict[str, tuple[str, Timeline[AccountState]]],
        regions: dict[str, Timeline[RegionState]], position: int,
    ) -> None:
        """Adopt timelines saved in a snapshot."""
        with self._lock:
            self._generation += 1
            self.accounts, self.regions, self.position = accounts, regions, position
            self._now.clear()
            self._cells.clear()

    # -- checks --------------------------------------------------------------------------

    def check(
        self, account_id: str, capability: str,
        at: datetime | str | None = None, as_known_at: datetime | str | None = None,
    ) -> Decision:
        if at is None and as_known_at is None:
            entry = self._now.get(account_id)
            if entry is not None and entry[0] > time():
                decision = entry[1].get(capability)
                if decision is not None:
                    return decision
            return self._now_decisions(account_id, capability)[capability]
        return self._check_at(account_id, capability, at, as_known_at)

    def capabilities(
        self, account_id: str, at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
    ) -> list[Decision]:
        return [self.check(account_id, cap, at, as_known_at) for cap in CAPABILITIES]

    def _timelines(self, account_id: str) -> tuple[Timeline[AccountState], Timeline[RegionState]]:
        try:
            region, account = self.accounts[account_id]
        except KeyError:
            raise UnknownAccount(account_id) from None
        return account, self.regions.get(region, EMPTY_REGION)

    def _now_decisions(self, account_id: str, capability: str) -> dict[str, Decision]:
        """Decide every capability for now, and cache them until the next change point."""
        if capability not in CAPABILITIES:
            raise UnknownCapability(capability)
        generation = self._generation
        account, region = self._timelines(account_id)
        t = datetime.now(UTC)
        acc, reg = account.state_at(t), region.state_at(t)
        decisions = {
            cap: Decision.of(account_id, cap, decide(cap, acc, reg), self.position)
            for cap in CAPABILITIES
        }
        changes = [c for c in (account.next_change(t), region.next_change(t)) if c is not None]
        until = min(changes).timestamp() if changes else math.inf
        with self._lock:
            if generation == self._generation:
                self._evict(self._now)
                self._now[account_id] = (until, decisions)
        return decisions

    def _check_at(
        self, account_id: str, capability: str,
        at: datetime | str | None, as_known_at: datetime | str | None,
    ) -> Decision:
        t = _utc("at", at) if at is not None else datetime.now(UTC)
        k = _utc("as_known_at", as_known_at) if as_known_at is not None else None
        account, region = self._timelines(account_id)
        acc, reg = account.state_at(t, k), region.state_at(t, k)
        key = (account_id, capability, id(acc), id(reg))
        cell = self._cells.get(key)
        if cell is not None and cell[0] is acc and cell[1] is reg:
            return cell[2]
        if capability not in CAPABILITIES:
            raise UnknownCapability(capability)
        decision = Decision.of(account_id, capability, decide(capability, acc, reg), self.position)
        with self._lock:
            self._evict(self._cells)
            self._cells[key] = (acc, reg, decision)
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
