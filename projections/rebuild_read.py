"""A rebuild's read of the log: straight into `LogFacts`, without an event object per row.

`LogFacts.add` takes decoded events one by one (a method call, a stream lookup, a sorted
insert with a key function per event), which is right for a catch-up of a few events and
costs about half again the decode on a rebuild's millions. Here the stored rows are decoded
by the store's own mapper parts (cipher, compressor, transcoder, then the event class's
upcasters: `state_decoder` does what `Mapper.to_domain_event` does, without its per-event
lookups), each becomes the Fact `fact_from_event` makes of it, appended to its stream, and each
stream is sorted once at the end. The result equals `LogFacts.add` over the same events
(tests/integration/test_rebuild_parts.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import chain
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Transcoder
from eventsourcing.utils import resolve_topic

from entitlements.domain.rules import Fact
from projections import log_reader
from projections.facts import COMMAND_RECORDS, LogFacts, fact_data

#: (done, total) after each page read.
Progress = Callable[[int, int], None]


def state_decoder(app: Application[Any]) -> Callable[[Any], tuple[type, dict[str, Any]]]:
    """(event class, state) of a stored event, as `Mapper.to_domain_event` decodes it:
    decrypted, decompressed, transcoded, then upcast to the class's current version."""
    mapper = app.mapper
    cipher, compressor, decode = mapper.cipher, mapper.compressor, json_decoder(mapper.transcoder)
    classes: dict[str, tuple[type, int]] = {}

    def decode_state(stored: Any) -> tuple[type, dict[str, Any]]:
        found = classes.get(stored.topic)
        if found is None:
            cls = resolve_topic(stored.topic)
            found = classes[stored.topic] = (cls, getattr(cls, "class_version", 1))
        cls, version = found
        data = stored.state
        if cipher:
            data = cipher.decrypt(data)
        if compressor:
            data = compressor.decompress(data)
        state: dict[str, Any] = decode(data)
        state["originator_id"] = stored.originator_id
        state["originator_version"] = stored.originator_version
        was = state.pop("class_version", 1)
        while was < version:
            getattr(cls, f"upcast_v{was}_v{was + 1}")(state)
            was += 1
        return cls, state

    return decode_state


def json_decoder(transcoder: Transcoder) -> Callable[[bytes], Any]:
    """`transcoder.decode`; for eventsourcing's own JSONTranscoder, its decoder's scanner
    called straight (what `JSONDecoder.decode` does but its two whitespace matches, a
    fifth of a stored state's decode): a state with whitespace around it or anything
    after it (none stored has) goes through `transcoder.decode`, which decodes or refuses
    it as ever."""
    scan = getattr(getattr(transcoder, "decoder", None), "scan_once", None)  # (untyped)
    if type(transcoder) is not JSONTranscoder or scan is None:  # another library version
        return transcoder.decode
    whole = transcoder.decode

    def decode(data: bytes) -> Any:
        text = data.decode("utf8")
        try:
            value, end = scan(text, 0)
        except StopIteration:
            return whole(data)
        return value if end == len(text) else whole(data)

    return decode


#: What a page of the log gives a rebuild: (last position, one record per event of an
#: account or region, the newest recorded_at met, command records included). A record is
#: (aggregate id as an int, its account_id, its region, then the Fact's type, version,
#: effective_at, recorded_at, data and cause): plain values, so another process can send it.
Page = tuple[int, list[tuple[Any, ...]], datetime | None]


def read_pages(app: Application[Any], after: int, stop: int, page: int) -> Iterator[Page]:
    """The log past `after` up to `stop`, decoded, as pages of records."""
    decode_state = state_decoder(app)
    select = app.recorder.select_notifications
    position = after
    while position < stop:
        rows = select(start=position + 1, limit=page, stop=stop)
        records: list[tuple[Any, ...]] = []
        newest = None
        for row in rows:
            try:
                cls, state = decode_state(row)
            except Exception:
                app.mapper.to_domain_event(row)  # the application's own error, if it has one
                raise
            recorded = state.get("recorded_at")
            if recorded is not None and (newest is None or recorded > newest):
                newest = recorded
            if cls.__name__ in COMMAND_RECORDS:
                continue
            records.append(_record(row, cls, state))
        last = rows[-1].id if rows else position
        yield last, records, newest
        if len(rows) < page:
            return
        position = last


def _record(row: Any, cls: type, state: dict[str, Any]) -> tuple[Any, ...]:
    """A stored event's record (see `Page`): its fields as `fact_from_event` makes a Fact
    of them (a Fact made only to be taken apart cost as much again as the rest)."""
    event: Any = object.__new__(cls)  # as the mapper makes it: the state is its __dict__
    object.__setattr__(event, "__dict__", state)
    return (
        cast(UUID, row.originator_id).int,  # as LogFacts keys its streams
        state.get("account_id"),
        state.get("region"),
        cls.__name__,
        event.originator_version,
        event.effective_at,
        event.recorded_at,
        fact_data(state),
        state.get("cause"),
    )


def read_facts(
    app: Application[Any],
    target: int,
    progress: Progress | None = None,
    rest: tuple[int, Iterable[Page]] | None = None,
) -> LogFacts:
    """The log up to position `target` as LogFacts (what `LogFacts.add` of every event up to
    `target` gives), pages of `log_reader.PAGE` rows. With `rest` = (split, pages), only
    the log up to `split` is read here: the pages of the rest come read already (by
    another process)."""
    facts = LogFacts()
    into: dict[int, tuple[str, list[Fact]]] = {}  # a stream's name and its facts, by key
    split, theirs = rest if rest is not None else (target, ())
    pages = chain(read_pages(app, 0, split, log_reader.PAGE), theirs)  # PAGE: a test may lower it
    for last, records, newest in pages:
        if newest is not None and (
            facts.newest_recorded_at is None or newest > facts.newest_recorded_at
        ):
            facts.newest_recorded_at = newest
        for key, account_id, region, type_, version, effective, recorded, data, cause in records:
            found = into.get(key)  # (no *fields: a list per record and a call taking it apart)
            if found is None:
                found = into[key] = _open(facts, key, account_id, region, type_, version)
            name, stream_facts = found
            stream_facts.append(Fact(name, type_, version, effective, recorded, data, cause))
        facts.position = max(facts.position, last)
        if progress is not None:
            progress(facts.position, target)
    for streams in (facts.accounts, facts.regions):
        for stream_facts in streams.values():
            _sort(stream_facts)
    return facts


def _open(
    facts: LogFacts, key: int, account_id: str, region: str, type_: str, version: int
) -> tuple[str, list[Fact]]:
    """The stream whose first event this is, as `LogFacts.add` opens it: its name (each
    of its Facts holds this one text) and its list of facts."""
    if type_ == "AccountRegistered":
        facts.stream_of[key] = ("account", account_id)
        facts.region_of[account_id] = region
        facts.members.setdefault(region, []).append(account_id)
        return f"account:{account_id}", facts.accounts.setdefault(account_id, [])
    if type_ == "RegionOpened":
        facts.stream_of[key] = ("region", region)
        return f"region:{region}", facts.regions.setdefault(region, [])
    raise ValueError(f"event {type_} v{version} of an unknown stream")


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
