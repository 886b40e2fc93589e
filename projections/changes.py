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
  The capabilities compared are `rules.CAPABILITIES` and `route_via:R` for every region R
  with events by then, the account's own and every region its old or new choice names.
- **Region event** (stream "region:<code>"): one item per region capability
  (`subscribe_online`, `purchase_direct`, `purchase_via_partner`) whose answer for an
  ordinary active account of the region (registered, not suspended, registration not
  pending) changes at e: `{"region", "capability", "old", "new", ...same keys}`; and a
  `data_centre_isolated` switch gives one item `{"region", "scope": "outside",
  "capability": "route_via:<code>", ...}`: the answer for an ordinary account *outside* the
  region without a choice (rule 10 is answered from the region's own events: no fan-out). These
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

Cost: no Fact per account kept, no event decoded but those asked about and the regions'. A process keeping the feed
(`ChangeFeed`, started by the first /v1/changes) works on the log as it holds it, the light
log (light_log.py) or LogFacts: "before" an account event is the account's facts read back
from the check index, so the feed adds no memory per account. `changes_after`, for positions
older than the kept feed, reads only the notifications after `after` (command records are
skipped without being decoded), the region events at positions up to `after` (one read of
the log filtered by the region topics: the store scans those positions, no index on
topics; an engine keeps them across requests, `RegionLog`, so a later request reads only
the new part) and, for each account met, its own stream's
earlier events, once a request: O(events read after `after` + region events). Each event
costs two folds of its own stream and one of its region, never a pass over a region's
accounts.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from entitlements.domain.event_facts import fact_from_event
from entitlements.domain.events import (
    ACCOUNT_REGISTERED,
    COMMAND_RECORDS,
    COMMAND_TOPICS,
    REGION_EVENTS,
    REGION_OPENED,
    topic,
)
from entitlements.domain.rules import (
    CAPABILITIES,
    ROUTE_VIA,
    AccountState,
    Fact,
    Verdict,
    decide,
    fold_account,
    fold_region,
)
from entitlements.domain.times import iso
from projections.facts import Changed, LogFacts
from projections.light_log import LightLog
from projections.log_reader import read_log, read_stored

PAGE = 1000  # notifications per select
REGION_CAPABILITIES = ("subscribe_online", "purchase_direct", "purchase_via_partner")
#: The region stream's topics (entitlements.domain.region.Region's events): few, read with positions.
REGION_TOPICS = frozenset(topic(name) for name in REGION_EVENTS)


@dataclass
class Page:
    """A page of the change feed as it is filled, position by position in log order: the
    paging rule of the module docstring in one place (`changes_after`, `ChangeFeed.read`
    and the tests' reference all page alike). `next` is where the next page starts: the
    last position whose items are all in this page, or that gave none."""

    limit: int
    next: int
    items: list[dict[str, Any]] = field(default_factory=list)

    def take(self, position: int, found: list[dict[str, Any]]) -> bool:
        """Add the items of `position`, whole or not at all; False when the page is done:
        they would go past `limit` on a page that has some already (they start the next
        page), or the page is full with them."""
        if found and self.items and len(self.items) + len(found) > self.limit:
            return False
        self.items.extend(found)
        self.next = position
        return len(self.items) < self.limit

    def skip(self, position: int) -> None:
        """A position that changes no answer (a command record): the next page may start
        after it."""
        self.next = max(self.next, position)

    def answer(self) -> tuple[list[dict[str, Any]], int]:
        """The items and the position to ask from next."""
        return self.items, self.next


class RegionLog:
    """Every region event as far as `position`, with its log position: what "a region's
    events at positions < p" needs (Facts carry no positions). Region events are few; an
    engine keeps one across requests (threads: `upto` holds a lock), so each request reads
    only the log's new part for them."""

    def __init__(self) -> None:
        self.position = 0
        self.code_of: dict[int, str] = {}  # region aggregate id (int) -> its code
        self.events: dict[str, list[tuple[int, Fact]]] = {}  # code -> (position, fact)
        self._sorted: dict[tuple[str, int], list[Fact]] = {}
        self._lock = threading.Lock()

    def upto(self, app: Any, position: int) -> RegionLog:
        """A copy holding exactly the region events at positions up to `position`, this
        one read on (one read of the log filtered by the region topics) if behind it."""
        with self._lock:
            if position > self.position:
                for page in read_log(app, self.position, stop=position, topics=REGION_TOPICS):
                    for at, event in page:
                        self.take(at, event)
                self.position = position
            copy = RegionLog()
            copy.position = position
            copy.code_of = dict(self.code_of)
            for code, events in self.events.items():
                copy.events[code] = [e for e in events if e[0] <= position]
            return copy

    def take(self, position: int, event: Any) -> tuple[str, Fact]:
        """One region event, the next of its stream; its region's code and Fact."""
        key = event.originator_id.int
        if type(event).__name__ == REGION_OPENED:
            self.code_of[key] = event.region
        code = self.code_of[key]
        fact = fact_from_event(f"region:{code}", event)
        self.events.setdefault(code, []).append((position, fact))
        self.position = max(self.position, position)
        return code, fact

    def facts(self, code: str) -> list[Fact]:
        """The region's facts taken so far, in effective order (a request takes them in
        log order: at an event's position, exactly those of lower positions)."""
        events = self.events.get(code, [])
        found = self._sorted.get((code, len(events)))
        if found is None:
            found = self._sorted[code, len(events)] = sorted((f for _, f in events), key=_order)
        return found


def changes_after(
    app: Any, after: int, limit: int = 100, regions: RegionLog | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Capability changes recorded after log position `after` (at most `limit` items, see
    the module docstring for a position with more), and the position to ask from next.
    `regions`: the region events read so far with their positions, kept by the caller
    across requests (read on here as far as `after` when behind it, never changed else)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    after = max(after, 0)
    regions = (RegionLog() if regions is None else regions).upto(app, after)
    accounts: dict[int, list[Fact]] = {}  # this request's accounts, as far as it read them
    page = Page(limit, after)
    for n in _notifications(app, after):
        if n.topic in COMMAND_TOPICS:
            page.skip(n.id)
            continue
        event = app.mapper.to_domain_event(n)
        if n.topic in REGION_TOPICS:
            before = regions.facts(regions.code_of.get(event.originator_id.int, ""))
            code, fact = regions.take(n.id, event)
            found = _region_items(code, before, fact, n.id)
        else:
            found = _account_event_items(app, accounts, regions, n.id, event)
        if not page.take(n.id, found):
            break
    return page.answer()


def _notifications(app: Any, after: int) -> Iterator[Any]:
    """The log's notifications after `after`, page by page, not decoded."""
    for page in read_stored(app, after, page=PAGE):
        yield from page


def _account_event_items(
    app: Any, accounts: dict[int, list[Fact]], regions: RegionLog, position: int, event: Any
) -> list[dict[str, Any]]:
    """An account event's items: "before" is its stream's events of lower versions (read
    from the store once a request, then kept), its region's those taken so far."""
    key = event.originator_id.int
    version = event.originator_version
    before = accounts.get(key)
    if before is None:
        stored = (
            app.recorder.select_events(event.originator_id, lte=version - 1) if version > 1 else []
        )
        earlier = [app.mapper.to_domain_event(s) for s in stored]
        account_id = (earlier[0] if earlier else event).account_id
        before = sorted((fact_from_event(f"account:{account_id}", e) for e in earlier), key=_order)
    stream = before[0].stream if before else f"account:{event.account_id}"
    fact = fact_from_event(stream, event)
    after = sorted([*before, fact], key=_order)
    accounts[key] = after
    code = _registered_region(after)
    account_id = stream.removeprefix("account:")
    known = [c for c, events in regions.events.items() if events]  # (a copy keeps empty ones)
    return _account_items(account_id, code, regions.facts, known, before, after, fact, position)


def _order(fact: Fact) -> tuple[Any, int]:
    return fact.order


def _registered_region(stream: list[Fact]) -> str:
    return str(next(f.data["region"] for f in stream if f.type == ACCOUNT_REGISTERED))


class ChangeFeed:
    """The change feed kept as the log is taken in, in log order (see Projector.feed): when
    the event at position p arrives, the log (a LightLog, no Fact per account, or LogFacts)
    holds exactly the positions before p, which is the "before" an item needs. Items of
    the newest positions are kept (at most `keep` positions with items); a question about
    older positions is for `changes_after`."""

    def __init__(self, position: int, keep: int = 100_000) -> None:
        self.since = position  # answers exactly for any `after` >= since
        self.position = position
        self._positions: deque[int] = deque()
        self._items: deque[list[dict[str, Any]]] = deque()
        self.keep = keep
        self.regions = RegionLog()  # for `changes_after`, kept across requests

    def take(self, log: LogFacts | LightLog, position: int, event: Any) -> Changed:
        """Add one event (the next in log order) to `log`, keeping the answers it changed.
        (A LightLog keeps only this event's account in `accounts`: level the index with
        each event's Changed before the next.)"""
        changed = log.add([(position, event)])
        if type(event).__name__ not in COMMAND_RECORDS:
            found = _changes_at(log, position, event, changed)
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
        page = Page(limit, after)
        i = bisect.bisect_right(self._positions, after)
        while i < len(self._positions):
            if not page.take(self._positions[i], self._items[i]):
                return page.answer()
            i += 1
        page.skip(self.position)  # the positions after the last kept one gave no items
        return page.answer()


def _changes_at(
    log: LogFacts | LightLog, position: int, event: Any, changed: Changed
) -> list[dict[str, Any]]:
    """Which answers the event, just taken into `log`, changed at its effective time."""
    version = event.originator_version
    if changed.accounts:
        (account_id,) = changed.accounts
        stream = log.accounts[account_id]  # a LightLog: this add's accounts, whole
        fact = next(f for f in stream if f.version == version)
        before = [f for f in stream if f is not fact]
        code = _registered_region(stream)
        regions = log.regions
        return _account_items(
            account_id,
            code,
            lambda c: regions.get(c, []),
            list(regions),
            before,
            stream,
            fact,
            position,
        )
    (code,) = changed.regions
    stream = log.regions[code]
    fact = next(f for f in stream if f.version == version)
    return _region_items(code, [f for f in stream if f is not fact], fact, position)


def _account_items(
    account_id: str,
    code: str,
    region_facts: Callable[[str], list[Fact]],
    known: list[str],
    before: list[Fact],
    after: list[Fact],
    fact: Fact,
    position: int,
) -> list[dict[str, Any]]:
    """One item per capability whose answer at the fact's effective time the account's
    stream `before` and `after` it give differently (the regions' facts as of the same
    position, `region_facts(code)`): the fixed capabilities, and `route_via:R` for every
    region R with events (`known`), the account's own and those its choices name."""
    t = fact.effective_at
    region = fold_region(code, region_facts(code), at=t)
    old = fold_account(before, at=t)
    new = fold_account(after, at=t)
    verdicts = [(cap, decide(cap, old, region), decide(cap, new, region)) for cap in CAPABILITIES]
    chosen = [r for s in (old, new) if s.data_regions for r in s.data_regions.data["regions"]]
    for via in sorted({*known, code, *chosen}):
        cap, target = ROUTE_VIA + via, fold_region(via, region_facts(via), at=t)
        verdicts.append((cap, decide(cap, old, target), decide(cap, new, target)))
    return _items({"account_id": account_id}, verdicts, fact, position)


def _region_items(code: str, before: list[Fact], fact: Fact, position: int) -> list[dict[str, Any]]:
    """One item per region capability whose answer for an ordinary account there the
    region's facts `before` and with `fact` give differently at its effective time."""
    ordinary = _ordinary_account(code, fact)
    after = sorted([*before, fact], key=_order)
    old_region = fold_region(code, before, at=fact.effective_at)
    new_region = fold_region(code, after, at=fact.effective_at)
    verdicts = [
        (cap, decide(cap, ordinary, old_region), decide(cap, ordinary, new_region))
        for cap in REGION_CAPABILITIES
    ]
    items = _items({"region": code}, verdicts, fact, position)
    # route_via:code for an ordinary account outside the region without a choice: its
    # isolation (rule 10) is answered from the region's own events, never fanned out either
    outsider = _ordinary_account("", fact)
    via = ROUTE_VIA + code
    verdict = (via, decide(via, outsider, old_region), decide(via, outsider, new_region))
    return items + _items({"region": code, "scope": "outside"}, [verdict], fact, position)


def _ordinary_account(code: str, fact: Fact) -> AccountState:
    """An active account of the region (registered, nothing suspended): the one whose
    answers a region item stands for, so the rules themselves judge region changes."""
    registration = Fact(
        "account:", ACCOUNT_REGISTERED, 1, fact.effective_at, fact.recorded_at, {"region": code}
    )
    return AccountState(registration=registration, region=code, plan_set_by=registration)


def _differ(old: Verdict, new: Verdict) -> bool:
    return (old.allowed, old.value) != (new.allowed, new.value)


def _items(
    subject: dict[str, str],
    verdicts: list[tuple[str, Verdict, Verdict]],
    fact: Fact,
    position: int,
) -> list[dict[str, Any]]:
    """One item per capability whose answer differs; the event's own fields are made once
    per event (its items share one `cause` dict: read, never changed)."""
    changed = [(cap, old, new) for cap, old, new in verdicts if _differ(old, new)]
    if not changed:
        return []
    event = {
        "effective_at": iso(fact.effective_at),
        "recorded_at": iso(fact.recorded_at),
        "position": position,
        "cause": fact.as_dict(),
    }
    return [
        {
            **subject,
            "capability": cap,
            "old": {"allowed": old.allowed, "value": old.value},
            "new": {"allowed": new.allowed, "value": new.value},
            **event,
        }
        for cap, old, new in changed
    ]


__all__ = ["ChangeFeed", "RegionLog", "changes_after"]
