"""A rebuild's read of the log: every event into its stream's facts, each stream sorted once.

`LogFacts.add` takes decoded events one by one (a method call, a stream lookup, a sorted
insert with a key function per event), which is right for a catch-up of a few events and
costs about half again the decode on a rebuild's millions. Here each event, read through
the one log pager (`log_reader.read_log`: the application's own mapper decodes it), becomes
the Fact `fact_from_event` makes of it, appended to its stream, and each stream is sorted
once at the end. The result equals `LogFacts.add` over the same events
(tests/integration/test_rebuild_parts.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsourcing.application import Application

from entitlements.domain.event_facts import fact_from_event
from entitlements.domain.events import ACCOUNT_REGISTERED, COMMAND_RECORDS, REGION_OPENED
from entitlements.domain.rules import Fact
from projections.facts import LogFacts
from projections.log_reader import read_log

#: (done, total) after each page read.
Progress = Callable[[int, int], None]


def read_facts(app: Application[Any], target: int, progress: Progress | None = None) -> LogFacts:
    """The log up to position `target` as LogFacts (what `LogFacts.add` of every event up to
    `target` gives)."""
    facts = LogFacts()
    into: dict[int, tuple[str, list[Fact]]] = {}  # a stream's name and its facts, by key
    for page in read_log(app, 0, target):
        for _, event in page:
            recorded = getattr(event, "recorded_at", None)
            if recorded is not None and (
                facts.newest_recorded_at is None or recorded > facts.newest_recorded_at
            ):
                facts.newest_recorded_at = recorded
            if type(event).__name__ in COMMAND_RECORDS:
                continue
            key = event.originator_id.int  # as LogFacts keys its streams
            found = into.get(key)
            if found is None:
                found = into[key] = _open(facts, key, event)
            name, stream_facts = found
            stream_facts.append(fact_from_event(name, event))
        facts.position = max(facts.position, page[-1][0])
        if progress is not None:
            progress(facts.position, target)
    for streams in (facts.accounts, facts.regions):
        for stream_facts in streams.values():
            _sort(stream_facts)
    return facts


def _open(facts: LogFacts, key: int, event: Any) -> tuple[str, list[Fact]]:
    """The stream whose first event this is, as `LogFacts.add` opens it: its name (each
    of its Facts holds this one text) and its list of facts."""
    type_ = type(event).__name__
    account_id: str = getattr(event, "account_id", "")
    region: str = getattr(event, "region", "")
    if type_ == ACCOUNT_REGISTERED:
        facts.stream_of[key] = ("account", account_id)
        facts.region_of[account_id] = region
        facts.members.setdefault(region, []).append(account_id)
        return f"account:{account_id}", facts.accounts.setdefault(account_id, [])
    if type_ == REGION_OPENED:
        facts.stream_of[key] = ("region", region)
        return f"region:{region}", facts.regions.setdefault(region, [])
    raise ValueError(f"event {type_} v{event.originator_version} of an unknown stream")


def _sort(facts: list[Fact]) -> None:
    """In effective order, as `LogFacts` keeps them (stable: ties keep log order, as
    `bisect.insort` puts an equal key after those already there)."""
    for before, after in zip(facts, facts[1:], strict=False):  # `order` compared, unmade
        at = after.effective_at
        if at < before.effective_at or (
            at == before.effective_at and after.version < before.version
        ):
            facts.sort(key=lambda f: f.order)
            return
