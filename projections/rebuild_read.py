"""A rebuild's read of the log: every event into its stream's facts, each stream sorted once.

`LogFacts.add` takes decoded events one by one (a method call, a stream lookup, a sorted
insert with a key function per event), which is right for a catch-up of a few events and
costs about half again the decode on a rebuild's millions. Here each event, read through
the one log pager (`log_reader.read_stored`) and decoded by the application's own mapper
(`mapper.to_domain_event`, as `read_log` decodes it, without its list of (position, event)
per page), becomes the Fact `fact_from_state` makes of its state, appended to its stream,
and each stream is sorted once at the end. The end of the log may come read already by the
rebuild's other process (rebuild_writer.py), as pages of plain records (`read_pages`). The
result equals `LogFacts.add` over the same events (tests/integration/test_rebuild_parts.py
holds them equal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from eventsourcing.application import Application

from entitlements.domain.event_facts import fact_from_row, fact_from_state, fact_row
from entitlements.domain.events import ACCOUNT_REGISTERED, COMMAND_RECORDS, REGION_OPENED
from entitlements.domain.rules import Fact
from projections.facts import LogFacts
from projections.log_reader import read_stored

#: (done, total) after each page read.
Progress = Callable[[int, int], None]

#: A page of the log as the other process sends it: the last position read, the newest
#: recorded_at met (command records included; ISO 8601) and one record per account or
#: region event: its stream's key (the aggregate id as an int), the account id and region
#: it names, and the event as a Fact row (`event_facts.fact_row`, its stream named when
#: taken in). Plain values: the pages cross the pipe as JSON.
Page = tuple[int, str | None, list[list[Any]]]


def read_pages(app: Application[Any], after: int, stop: int) -> Iterator[Page]:
    """The log past `after` up to `stop` as pages of records, through the one pager."""
    decode = app.mapper.to_domain_event
    records: list[list[Any]] = []  # a page's, handed over as a copy

    def take(type_: str, state: dict[str, Any]) -> None:
        row = fact_row(fact_from_state("", type_, state["originator_version"], state))
        records.append(
            [state["originator_id"].int, state.get("account_id"), state.get("region"), row]
        )

    for page in read_stored(app, after, stop):
        newest = _decode(page, decode, take)
        yield page[-1].id, newest.isoformat() if newest is not None else None, records[:]
        records.clear()


def _decode(
    page: Sequence[Any], decode: Callable[[Any], Any], take: Callable[[str, dict[str, Any]], None]
) -> datetime | None:
    """Decode a page of stored events, hand each account or region event to `take` (its
    type's name, its fields) and return the newest recorded_at met (command records
    included). One call an event, not a list of them: a page's events kept alive at once
    would wake the garbage collector over the facts already read."""
    newest: datetime | None = None
    for stored in page:
        event = decode(stored)
        recorded = getattr(event, "recorded_at", None)
        if recorded is not None and (newest is None or recorded > newest):
            newest = recorded
        type_ = type(event).__name__
        if type_ not in COMMAND_RECORDS:
            take(type_, vars(event))
    return newest


def read_facts(
    app: Application[Any],
    target: int,
    progress: Progress | None = None,
    rest: tuple[int, Iterable[Page]] | None = None,
) -> LogFacts:
    """The log up to position `target` as LogFacts (what `LogFacts.add` of every event up to
    `target` gives). With `rest` = (split, pages), the log is read here up to `split` only:
    the pages of the rest come read already (by the other process)."""
    reading = _Reading(target, progress)
    into, open_stream = reading.into, reading.stream  # (looked up once: per event below)
    split, theirs = rest if rest is not None else (target, ())
    decode = app.mapper.to_domain_event  # the application's own mapper, as read_log's

    def take(type_: str, state: dict[str, Any]) -> None:
        version, key = state["originator_version"], state["originator_id"].int
        found = into.get(key)
        if found is None:
            found = open_stream(key, type_, version, state)
        found[1].append(fact_from_state(found[0], type_, version, state))

    for page in read_stored(app, 0, split):  # (no (position, event) list made per page)
        reading.read_to(page[-1].id, _decode(page, decode, take))
    for last, newest_text, records in theirs:
        for key, account_id, region, row in records:
            found = into.get(key)
            if found is None:
                found = open_stream(
                    key, row[1], row[2], {"account_id": account_id, "region": region}
                )
            found[1].append(fact_from_row(row, found[0]))
        reading.read_to(last, datetime.fromisoformat(newest_text) if newest_text else None)
    return reading.done()


class _Reading:
    """The LogFacts a rebuild reads into: streams opened as `LogFacts.add` opens them, each
    stream's facts appended in log order and sorted once at the end."""

    def __init__(self, target: int, progress: Progress | None) -> None:
        self.facts = LogFacts()
        self.target, self.progress = target, progress
        self.into: dict[int, tuple[str, list[Fact]]] = {}  # a stream's name, facts; by key

    def stream(
        self, key: int, type_: str, version: int, state: Mapping[str, Any]
    ) -> tuple[str, list[Fact]]:
        """The stream this event (of `type_`, `version`, its fields `state`) opens, as
        `LogFacts.add` opens it: its name (each of its Facts holds this one text) and its
        facts."""
        facts = self.facts
        account_id, region = state.get("account_id"), state.get("region")
        if type_ == ACCOUNT_REGISTERED and account_id is not None and region is not None:
            facts.stream_of[key] = ("account", account_id)
            facts.region_of[account_id] = region
            facts.members.setdefault(region, []).append(account_id)
            found = f"account:{account_id}", facts.accounts.setdefault(account_id, [])
        elif type_ == REGION_OPENED and region is not None:
            facts.stream_of[key] = ("region", region)
            found = f"region:{region}", facts.regions.setdefault(region, [])
        else:
            raise ValueError(f"event {type_} v{version} of an unknown stream")
        self.into[key] = found
        return found

    def read_to(self, position: int, newest: datetime | None) -> None:
        """A page read to `position`, the newest recorded_at met in it `newest`."""
        facts = self.facts
        if newest is not None and (
            facts.newest_recorded_at is None or newest > facts.newest_recorded_at
        ):
            facts.newest_recorded_at = newest
        facts.position = max(facts.position, position)
        if self.progress is not None:
            self.progress(facts.position, self.target)

    def done(self) -> LogFacts:
        for streams in (self.facts.accounts, self.facts.regions):
            for stream_facts in streams.values():
                _sort(stream_facts)
        return self.facts


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
