"""What a process keeps of the log, writer or checker: no Fact per account.

`LogFacts` holds every account's events as Facts (about 700 B an account). A process that
checks, and a writer deciding commands, need far less: the position and the store's clock,
the regions' facts (few), the accounts of each region, and per account only what the check
index holds, from which an account's facts are read back when a command, a fan-out or a
new event of it needs them (`CheckIndex.facts`). That is a `LightLog`, whether the process
started from a snapshot or read the whole log. It takes new events like `LogFacts.add`;
accounts it changed sit in the index as Fact lists until `compact` encodes them (or a check
does), so the Facts of a long read never pile up. The change feed works on it too (an
event's "before" is its account's facts read back, see changes.py). `materialize()` builds
the full `LogFacts` for what really wants every Fact in memory (a rebuild).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from entitlements.domain.account import account_uuid
from entitlements.domain.events import ACCOUNT_REGISTERED, COMMAND_RECORDS, REGION_OPENED
from entitlements.domain.region import region_id
from entitlements.domain.rules import Fact
from projections.check_index import CheckIndex
from projections.facts import Changed, LogFacts, TakesEvents

COMPACT_EVERY = 10_000  # accounts left as Fact lists in the index before they are encoded
ASKED_AT_MOST = 1_000  # streams asked of the store one by one, before every account is named
READ_KEPT = 20_000  # accounts whose facts a writer read, kept for the events it then saves

#: Asks the store which stream an aggregate id is (its first event names it); None: unknown.
Resolve = Callable[[Any], tuple[str, str] | None]


class LightLog(TakesEvents):
    """The log as far as `position`: regions' facts and members; accounts in the index."""

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
        # Which stream an aggregate id is (its 128-bit int): every account registered in
        # the part of the log this process read, and those asked of the store once (an
        # account known from a snapshot only). No other account costs an entry.
        self._account_of: dict[int, str] = {}
        self._region_of: dict[int, str] = {region_id(code).int: code for code in regions}
        self._resolve = resolve
        self._asked = 0  # streams asked of the store so far
        self._loose: set[str] = set()  # accounts the index holds as Fact lists
        # account -> (its index entry, the facts read from it) as a writer read them: the
        # next `add` starts from these instead of reading them again, while the entry is
        # still the very one they were read from (any change to the account replaces it).
        self._read: dict[str, tuple[Any, list[Fact]]] = {}

    # -- taking events in ----------------------------------------------------------------

    def add(self, events: Iterable[tuple[int, Any]], changed: Changed | None = None) -> Changed:
        """Take (position, decoded event) pairs in log order, as `LogFacts.add` does; the
        accounts this batch changed are kept whole in `accounts` (the index takes them)."""
        self.accounts = {}
        try:
            return super().add(events, changed)
        finally:
            self._read.clear()

    def _account_facts(self, account_id: str) -> list[Fact]:
        facts = self.accounts.get(account_id)
        if facts is None:
            read = self._read.pop(account_id, None)
            if read is not None and read[0] is self.index.accounts.get(account_id):
                facts = list(read[1])
            else:
                facts = self._facts_in_index(account_id)
            self.accounts[account_id] = facts
        return facts

    def _stream(self, event: Any) -> tuple[str, str]:
        topic_name = type(event).__name__
        if topic_name in COMMAND_RECORDS:
            return ("command", "")
        key = event.originator_id.int
        name = self._account_of.get(key)
        if name is not None:
            return ("account", name)
        code = self._region_of.get(key)
        if code is not None:
            return ("region", code)
        if topic_name == ACCOUNT_REGISTERED:
            self._account_of[key] = event.account_id
            self.members.setdefault(event.region, []).append(event.account_id)
            return ("account", event.account_id)
        if topic_name == REGION_OPENED:
            self._region_of[key] = event.region
            return ("region", event.region)
        if self._asked == ASKED_AT_MOST:  # many accounts of the snapshot move (a fan-out)
            self._name_every_account()
            name = self._account_of.get(key)
            if name is not None:
                return ("account", name)
        self._asked += 1
        stream = self._resolve(event.originator_id)  # an account known from the snapshot
        if stream is None:
            raise ValueError(f"event {topic_name} v{event.originator_version} of an unknown stream")
        (self._account_of if stream[0] == "account" else self._region_of)[key] = stream[1]
        return stream

    def name_stream(self, aggregate_id: UUID, account_id: str) -> None:
        """The account whose aggregate this is (a writer saving its events says so): its
        events need not be asked of the store when they come back."""
        self._account_of[aggregate_id.int] = account_id

    def _name_every_account(self) -> None:
        """Every account's aggregate id, derived from its name (about 2 us an account):
        cheaper, past a few hundred, than one store read per account met."""
        for account_id in self.index.accounts:
            self._account_of.setdefault(account_uuid(account_id).int, account_id)

    def compact(self, changed: Iterable[str], every: int | None = None) -> None:
        """The index has taken the changed accounts as Fact lists: once `every` of them
        (default COMPACT_EVERY) wait, encode them (about 20 us an account), so that a long
        catch-up, a bulk apply or a fan-out leaves the index compact, not a Fact per event."""
        self._loose.update(changed)
        if len(self._loose) < (COMPACT_EVERY if every is None else every):
            return
        accounts = self.index.accounts
        for account_id in self._loose:
            if account_id in accounts:
                self.index.code(account_id)
        self._loose.clear()

    # -- what a writer reads -------------------------------------------------------------

    def has_account(self, account_id: str) -> bool:
        return account_id in self.index.accounts

    def account_facts(self, account_id: str) -> list[Fact]:
        """The account's facts, built from the index (a new list each time); kept until the
        next `add`, which then need not build them again for the account's new events."""
        entry = self.index.accounts.get(account_id)
        facts = self._facts_in_index(account_id)
        if entry is not None and len(self._read) < READ_KEPT:
            self._read[account_id] = (entry, facts)
        return facts

    def _facts_in_index(self, account_id: str) -> list[Fact]:
        if account_id not in self.index.accounts:
            return []
        return self.index.facts(account_id)

    def account_region(self, account_id: str) -> str | None:
        registered = (f for f in self.account_facts(account_id) if f.type == ACCOUNT_REGISTERED)
        first = next(registered, None)
        return first.data["region"] if first is not None else None

    # -- every Fact, for what wants them all ---------------------------------------------

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
