"""The log, read into facts: per account and per region, in effective order.

Every projection starts here. `LogFacts.add` takes decoded events in log order (from a
catch-up, a follow loop or a rebuild) and says which streams changed, so a projection
recomputes only those.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from entitlements.domain.event_facts import fact_from_event
from entitlements.domain.events import ACCOUNT_REGISTERED, COMMAND_RECORDS, REGION_OPENED
from entitlements.domain.rules import Fact


@dataclass
class Changed:
    """Streams touched by a batch of events."""

    accounts: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)
    # Command records met on the way, for whoever keeps the command log (the writer).
    records: list[tuple[int, Any]] = field(default_factory=list)


class TakesEvents:
    """Taking decoded events in log order into facts: the one loop behind `LogFacts` (every
    account's facts, a writer's) and `LightLog` (a checking process's, which reads an
    account's facts back from the check index). Subclasses say where an account's facts
    live (`_account_facts`) and which stream an event is of (`_stream`)."""

    position: int
    newest_recorded_at: datetime | None
    regions: dict[str, list[Fact]]
    members: dict[str, list[str]]  # region -> its accounts, in registration order

    def add(self, events: Iterable[tuple[int, Any]], changed: Changed | None = None) -> Changed:
        """Take (position, decoded event) pairs in log order; skip positions already seen."""
        changed = changed or Changed()
        for position, event in events:
            if position <= self.position:
                continue
            self.position = position
            if event.recorded_at is not None and (
                self.newest_recorded_at is None or event.recorded_at > self.newest_recorded_at
            ):
                self.newest_recorded_at = event.recorded_at
            kind, name = self._stream(event)
            if kind == "command":
                changed.records.append((position, event))
                continue
            if kind == "account":
                facts = self._account_facts(name)
                changed.accounts.add(name)
            else:
                facts = self.regions.setdefault(name, [])
                changed.regions.add(name)
            fact = fact_from_event(f"{kind}:{name}", event)
            bisect.insort(facts, fact, key=lambda f: f.order)
        return changed

    def _account_facts(self, account_id: str) -> list[Fact]:
        raise NotImplementedError

    def _stream(self, event: Any) -> tuple[str, str]:
        raise NotImplementedError

    # -- what a writer reads (entitlements.application.engine decides with these alone) --------------

    def has_account(self, account_id: str) -> bool:
        raise NotImplementedError

    def account_facts(self, account_id: str) -> list[Fact]:
        """The account's facts in effective order; none for an unknown account. Read them,
        do not keep them: they may be the very list the log takes new events into."""
        raise NotImplementedError

    def account_region(self, account_id: str) -> str | None:
        """The region the account registered in; None for an unknown account."""
        raise NotImplementedError

    def region_facts(self, code: str) -> list[Fact]:
        return self.regions.get(code, [])

    def name_stream(self, aggregate_id: UUID, account_id: str) -> None:
        """The account whose aggregate this is, said by a writer about to save its events
        (a fan-out), so that taking them back in needs no store read."""


class LogFacts(TakesEvents):
    """Facts of every account and region, as far as `position` in the log (about 700 B an
    account): what a rebuild writes rows from. A writer or a checking process keeps a
    `LightLog` instead (light_log.py), and so does the change feed, which reads an
    account's facts back from the check index when an event of it comes in. Command
    records only move the position and the clock on: what a writer remembers of them is its
    own business (entitlements.application.command_book)."""

    newest_recorded_at: datetime | None = None  # the store's clock: never decreases

    def __init__(self) -> None:
        self.position = 0
        self.accounts: dict[str, list[Fact]] = {}
        self.regions: dict[str, list[Fact]] = {}
        self.region_of: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}  # region -> its accounts, in registration order
        # aggregate id (as its 128-bit int: cheap to keep in a snapshot) -> (kind, name)
        self.stream_of: dict[int, tuple[str, str]] = {}

    def _account_facts(self, account_id: str) -> list[Fact]:
        return self.accounts.setdefault(account_id, [])

    def has_account(self, account_id: str) -> bool:
        return account_id in self.accounts

    def account_facts(self, account_id: str) -> list[Fact]:
        return self.accounts.get(account_id) or []

    def account_region(self, account_id: str) -> str | None:
        return self.region_of.get(account_id)

    def _stream(self, event: Any) -> tuple[str, str]:
        try:
            return self.stream_of[event.originator_id.int]
        except KeyError:
            pass
        topic_name = type(event).__name__
        if topic_name == ACCOUNT_REGISTERED:
            stream = ("account", event.account_id)
            self.region_of[event.account_id] = event.region
            self.members.setdefault(event.region, []).append(event.account_id)
        elif topic_name == REGION_OPENED:
            stream = ("region", event.region)
        elif topic_name in COMMAND_RECORDS:
            return ("command", "")  # not kept: one per command would add up
        else:
            raise ValueError(f"event {topic_name} v{event.originator_version} of an unknown stream")
        self.stream_of[event.originator_id.int] = stream
        return stream
