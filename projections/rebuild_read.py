"""A rebuild's read of the log: straight into `LogFacts`, without an event object per row.

`LogFacts.add` takes decoded events one by one (a method call, a stream lookup, a sorted
insert with a key function per event), which is right for a catch-up of a few events and
costs about half again the decode on a rebuild's millions. Here the stored rows are decoded
by the store's own mapper parts (cipher, compressor, transcoder, then the event class's
upcasters: `state_decoder` does what `Mapper.to_domain_event` does, without its per-event
lookups), each becomes the Fact `fact_from_event` makes of it, appended to its stream, and each
stream is sorted once at the end. The result equals `LogFacts.add` over the same events
(tests/integration/test_rebuild_read.py holds them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import resolve_topic

from entitlements.rules import Fact
from projections import log_reader
from projections.facts import COMMAND_RECORDS, LogFacts, fact_from_event

#: (done, total) after each page read.
Progress = Callable[[int, int], None]


def state_decoder(app: Application[Any]) -> Callable[[Any], tuple[type, dict[str, Any]]]:
    """(event class, state) of a stored event, as `Mapper.to_domain_event` decodes it:
    decrypted, decompressed, transcoded, then upcast to the class's current version."""
    mapper = app.mapper
    cipher, compressor, decode = mapper.cipher, mapper.compressor, mapper.transcoder.decode
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


def read_facts(app: Application[Any], target: int, progress: Progress | None = None) -> LogFacts:
    """The log up to position `target` as LogFacts (what `LogFacts.add` of every event up to
    `target` gives), pages of `log_reader.PAGE` rows."""
    facts = LogFacts()
    accounts, regions, stream_of = facts.accounts, facts.regions, facts.stream_of
    region_of, members = facts.region_of, facts.members
    decode_state = state_decoder(app)
    select = app.recorder.select_notifications
    newest = None
    position, page = 0, log_reader.PAGE  # read when called: a test may lower it
    while position < target:
        rows = select(start=position + 1, limit=page, stop=target)
        for row in rows:
            cls, state = decode_state(row)
            recorded = state.get("recorded_at")
            if recorded is not None and (newest is None or recorded > newest):
                newest = recorded
            name = cls.__name__
            if name in COMMAND_RECORDS:
                continue
            key = cast(UUID, row.originator_id).int  # as LogFacts keys its streams
            stream = stream_of.get(key)
            if stream is None:
                stream = _new_stream(name, state, row)
                stream_of[key] = stream
                if stream[0] == "account":
                    region_of[stream[1]] = state["region"]
                    members.setdefault(state["region"], []).append(stream[1])
            event: Any = object.__new__(cls)  # as the mapper makes it: the state is its __dict__
            object.__setattr__(event, "__dict__", state)
            kind, stream_name = stream
            fact = fact_from_event(f"{kind}:{stream_name}", event)
            if kind == "account":
                accounts.setdefault(stream_name, []).append(fact)
            else:
                regions.setdefault(stream_name, []).append(fact)
        if rows:
            facts.position = rows[-1].id
        if progress is not None:
            progress(facts.position, target)
        if len(rows) < page:
            break
        position = rows[-1].id
    facts.newest_recorded_at = newest
    for streams in (accounts, regions):
        for stream_facts in streams.values():
            _sort(stream_facts)
    return facts


def _new_stream(name: str, state: dict[str, Any], row: Any) -> tuple[str, str]:
    """The stream an aggregate's first event met opens, as `LogFacts` names it."""
    if name == "AccountRegistered":
        return ("account", state["account_id"])
    if name == "RegionOpened":
        return ("region", state["region"])
    raise ValueError(f"event {name} v{row.originator_version} of an unknown stream")


def _sort(facts: list[Fact]) -> None:
    """In effective order, as `LogFacts` keeps them (stable: ties keep log order, as
    `bisect.insort` puts an equal key after those already there)."""
    for before, after in zip(facts, facts[1:], strict=False):
        if after.order < before.order:
            facts.sort(key=lambda f: f.order)
            return
