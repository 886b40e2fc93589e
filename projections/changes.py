"""The change feed: which capability answers each recorded event changed.

`changes_after(app, after, limit)` reads the log and returns the capability changes
recorded at positions after `after`, in log order, and the position to ask from next.
A meeting service polls it to end a meeting whose host just lost hosting.

Semantics, for the event at log position p (effective_at e):

- **Account event** (stream "account:<id>"): for every capability in
  `rules.CAPABILITIES`, the decision at effective time e *as known just before p* (the
  account's events at positions < p, its region's events at positions < p) is compared
  with the decision at e *as known with p* (the same, plus this event). Each capability
  whose `allowed` or `value` differs gives one item:
  `{"account_id", "capability", "old": {"allowed", "value"}, "new": {...},
  "effective_at", "recorded_at", "position": p, "cause": Fact.as_dict()}`.
  "As known" means by log position, not by `recorded_at`: events of one command share a
  `recorded_at`, and the feed must tell them apart. Only the answer *at e* is compared: a
  backdated or future-effective event is listed once, when recorded, with its own
  `effective_at` (what it does to later effective times follows from the account's
  later events, each listed at its own position). A registration is a change too
  (rule 7: nothing is allowed before it).
- **Region event** (stream "region:<code>"): one item per region capability
  (`subscribe_online`, `purchase_direct`, `purchase_via_partner`) whose answer for an
  ordinary active account of the region (registered, not suspended, registration not
  pending) changes at e: `{"region", "capability", "old", "new", ...same keys}`. These
  rules are answered from the region's own events and are never fanned out, so one item
  stands for every account there. A `free_hosting_suspended` switch gives no region item:
  it reaches accounts as their own HostingRevoked / HostingRestored, listed as account
  items. `registration_suspended` and `RegionOpened` change no existing account's answer.
- **Command records** (`CommandApplied`, `CommandRejected`, `FanOutCompleted`) change no
  capability: never an item, but they advance the next position like any other.

Paging: the returned position is the last one whose items are all in this page (or that
gave none). Asking again from it neither misses nor repeats an item. The items of one
position are never split across pages: a page stops before a position whose items would
go past `limit`, unless the page is still empty; then that position's items are returned
whole (at most len(CAPABILITIES) items), so a page may exceed a `limit` smaller than that.
With nothing new, the answer is `([], after)`.

Cost: the log is read from position 1 (knowing "before" needs every earlier event of the
stream and its region; facts carry no positions), command records are skipped without
being decoded, and each event after `after` costs two folds of its own stream and one of
its region: O(events read), never a pass over a region's accounts.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from entitlements.rules import (
    CAPABILITIES,
    AccountState,
    Fact,
    Verdict,
    decide,
    fold_account,
    fold_region,
    iso,
)
from projections.facts import COMMAND_RECORDS, COMMAND_TOPICS, Changed, LogFacts

PAGE = 1000  # notifications per select
REGION_CAPABILITIES = ("subscribe_online", "purchase_direct", "purchase_via_partner")


def changes_after(app: Any, after: int, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Capability changes recorded after log position `after` (at most `limit` items, see
    the module docstring for a position with more), and the position to ask from next."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    after = max(after, 0)
    facts = LogFacts()
    items: list[dict[str, Any]] = []
    next_position = after
    start = 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=PAGE)
        for n in page:
            if n.topic in COMMAND_TOPICS:
                next_position = max(next_position, n.id)
                continue
            event = app.mapper.to_domain_event(n)
            if n.id <= after:
                facts.add([(n.id, event)])
                continue
            found = _changes_at(facts, n.id, event)
            if found and items and len(items) + len(found) > limit:
                return items, next_position
            items.extend(found)
            next_position = n.id
            if len(items) >= limit:
                return items, next_position
        if len(page) < PAGE:
            return items, next_position
        start = page[-1].id + 1


class ChangeFeed:
    """The change feed kept as the log is taken in, in log order (see Projector.feed): when
    the event at position p arrives, the facts hold exactly the positions before p, which
    is the "before" an item needs. Items of the newest positions are kept (at most `keep`
    positions with items); a question about older positions is for `changes_after`."""

    def __init__(self, position: int, keep: int = 100_000) -> None:
        self.since = position  # answers exactly for any `after` >= since
        self.position = position
        self._positions: deque[int] = deque()
        self._items: deque[list[dict[str, Any]]] = deque()
        self.keep = keep

    def take(self, facts: LogFacts, position: int, event: Any) -> Changed:
        """Add one event (the next in log order) to `facts`, keeping the answers it changed."""
        if type(event).__name__ in COMMAND_RECORDS:
            changed = facts.add([(position, event)])
        else:
            changed = Changed()
            found = _changes_at(facts, position, event, changed)
            if found:
                self._positions.append(position)
                self._items.append(found)
                if len(self._positions) > self.keep:
                    self.since = self._positions.popleft()
                    self._items.popleft()
        self.position = max(self.position, position)
        return changed

    def read(self, after: int, limit: int) -> tuple[list[dict[str, Any]], int] | None:
        """As `changes_after(app, after, limit)`, from memory; None when `after` is older
        than what is kept."""
        if after < self.since:
            return None
        items: list[dict[str, Any]] = []
        i = bisect.bisect_right(self._positions, after)
        while i < len(self._positions):
            found = self._items[i]
            if items and len(items) + len(found) > limit:
                return items, self._positions[i - 1]
            items.extend(found)
            if len(items) >= limit:
                return items, self._positions[i]
            i += 1
        return items, max(after, self.position)


def _changes_at(
    facts: LogFacts, position: int, event: Any, changed: Changed | None = None
) -> list[dict[str, Any]]:
    """Add the event to `facts` and say which answers it changed at its effective time."""
    changed = facts.add([(position, event)], changed)
    version = event.originator_version
    if changed.accounts:
        (account_id,) = changed.accounts
        stream = facts.accounts[account_id]
        fact = next(f for f in stream if f.version == version)
        before = [f for f in stream if f is not fact]
        code = facts.region_of[account_id]
        region = fold_region(code, facts.region_facts(code), at=fact.effective_at)
        old = fold_account(before, at=fact.effective_at)
        new = fold_account(stream, at=fact.effective_at)
        return [
            _item({"account_id": account_id}, cap, was, now, fact, position)
            for cap in CAPABILITIES
            if _differ(was := decide(cap, old, region), now := decide(cap, new, region))
        ]
    (code,) = changed.regions
    stream = facts.regions[code]
    fact = next(f for f in stream if f.version == version)
    ordinary = _ordinary_account(code, fact)
    old_region = fold_region(code, [f for f in stream if f is not fact], at=fact.effective_at)
    new_region = fold_region(code, stream, at=fact.effective_at)
    return [
        _item({"region": code}, cap, was, now, fact, position)
        for cap in REGION_CAPABILITIES
        if _differ(
            was := decide(cap, ordinary, old_region), now := decide(cap, ordinary, new_region)
        )
    ]


def _ordinary_account(code: str, fact: Fact) -> AccountState:
    """An active account of the region (registered, nothing suspended): the one whose
    answers a region item stands for, so the rules themselves judge region changes."""
    registration = Fact(
        "account:", "AccountRegistered", 1, fact.effective_at, fact.recorded_at, {"region": code}
    )
    return AccountState(registration=registration, region=code, plan_set_by=registration)


def _differ(old: Verdict, new: Verdict) -> bool:
    return (old.allowed, old.value) != (new.allowed, new.value)


def _item(
    subject: dict[str, str], capability: str, old: Verdict, new: Verdict, fact: Fact, position: int
) -> dict[str, Any]:
    return {
        **subject,
        "capability": capability,
        "old": {"allowed": old.allowed, "value": old.value},
        "new": {"allowed": new.allowed, "value": new.value},
        "effective_at": iso(fact.effective_at),
        "recorded_at": iso(fact.recorded_at),
        "position": position,
        "cause": fact.as_dict(),
    }


__all__ = ["ChangeFeed", "changes_after"]
