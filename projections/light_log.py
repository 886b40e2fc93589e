"""What a process that only checks keeps of the log: no Fact per account.

`LogFacts` holds every account's events as Facts (about 700 B an account): a writer needs
them (fan-outs, telling a lost acknowledgement from a conflict), a checking process does not.
After a snapshot load the projector keeps a `LightLog` instead: the position and the store's
clock, the regions' facts (few), and nothing per account but what the check index holds.
It takes new events like `LogFacts.add` (an account's events are read back from the index
when one of its events arrives), and `materialize()` builds the full `LogFacts` the moment
someone needs them (a first command, the change feed, a rebuild).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from entitlements.account import account_uuid
from entitlements.region import region_id
from entitlements.rules import Fact
from projections.check_index import CheckIndex
from projections.facts import COMMAND_RECORDS, Changed, LogFacts, TakesEvents

STREAMS_KEPT = 100_000  # account streams remembered (each asked of the store once)

#: Asks the store which stream an aggregate id is (its first event names it); None: unknown.
Resolve = Callable[[Any], tuple[str, str] | None]


class LightLog(TakesEvents):
    """The log as far as `position`, for checking: regions' facts; accounts in the index."""

    def __init__(
        self,
        index: CheckIndex,
        position: int,
        newest_recorded_at: datetime | None,
        regions: dict[str, list[Fact]],
        members: dict[str, list[str]],
        resolve: Resolve,
    ) -> None:
        self.index = index
        self.position = position
        self.newest_recorded_at = newest_recorded_at
        self.regions = regions
        self.members = members  # region -> its accounts, in registration order
        # The accounts the last `add` changed, whole (the index takes them from here).
        self.accounts: dict[str, list[Fact]] = {}
        self._streams: dict[int, tuple[str, str]] = {
            region_id(code).int: ("region", code) for code in regions
        }
        self._resolve = resolve

    def region_facts(self, code: str) -> list[Fact]:
        return self.regions.get(code, [])

    def add(self, events: Iterable[tuple[int, Any]], changed: Changed | None = None) -> Changed:
        """Take (position, decoded event) pairs in log order, as `LogFacts.add` does; the
        accounts this batch changed are kept whole in `accounts` (the index takes them)."""
        self.accounts = {}
        return super().add(events, changed)

    def _account_facts(self, account_id: str) -> list[Fact]:
        facts = self.accounts.get(account_id)
        if facts is None:
            known = account_id in self.index.accounts
            facts = self.accounts[account_id] = self.index.facts(account_id) if known else []
        return facts

    def _stream(self, event: Any) -> tuple[str, str]:
        topic_name = type(event).__name__
        if topic_name in COMMAND_RECORDS:
            return ("command", "")
        key = event.originator_id.int
        stream = self._streams.get(key)
        if stream is not None:
            return stream
        if topic_name == "AccountRegistered":
            stream = ("account", event.account_id)
            self.members.setdefault(event.region, []).append(event.account_id)
        elif topic_name == "RegionOpened":
            stream = ("region", event.region)
        else:  # an account known from the snapshot: its first event names it
            stream = self._resolve(event.originator_id)
            if stream is None:
                raise ValueError(
                    f"event {topic_name} v{event.originator_version} of an unknown stream"
                )
        if stream[0] == "region" or len(self._streams) < STREAMS_KEPT:
            self._streams[key] = stream  # regions: few; accounts: the most recent ones
        return stream

    def materialize(self) -> LogFacts:
        """The full LogFacts of the same log position, Facts built from the index."""
        facts = LogFacts()
        facts.position = self.position
        facts.newest_recorded_at = self.newest_recorded_at
        facts.regions = self.regions
        for code in self.regions:
            facts.stream_of[region_id(code).int] = ("region", code)
        region_of = {a: r for r, accounts in self.members.items() for a in accounts}
        for account_id in list(self.index.accounts):
            facts.accounts[account_id] = self.index.facts(account_id)
            facts.region_of[account_id] = region_of[account_id]
            facts.stream_of[account_uuid(account_id).int] = ("account", account_id)
        facts.members = self.members
        return facts
