"""One account or region event in its forms, translated in one place: the stored event
(its state, as the library decodes it) -> the `Fact` the rules read; a rule-caused
correction's Fact -> the event it is recorded as; a Fact <-> its row in a snapshot's JSON;
and the check index's stand-in for a Fact (no stream, no times).

Why one place: the aggregates (replaying), the projections (reading the log), a rebuild
(reading rows), the check index and the snapshots must all make the SAME Fact of one
event, or a check answers differently in different processes. Every other form derives
from these functions: `tests/integration/test_rebuild_parts.py` and the snapshot tests hold
them equal.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from entitlements.domain.events import HOSTING_EVENTS
from entitlements.domain.rules import NOBODY, WHO_FIELDS, Fact, Who
from entitlements.domain.times import EPOCH

#: Event attributes that are not part of a fact's data (and `self`: an `@event` body hands
#: its arguments over as they are, `locals()`).
ENVELOPE = frozenset(
    {
        "self",
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "effective_at",
        "recorded_at",
        "cause",
        "account_id",
        "chain",  # the integrity chain's link (entitlements.adapters.integrity), not the event's data
    }
)


def fact_data(state: Mapping[str, Any]) -> dict[str, Any]:
    """A Fact's data: the event's own fields, without its envelope and without a who-asked
    field that is empty (events recorded before who-asked existed carry neither)."""
    return {
        k: v for k, v in state.items() if k not in ENVELOPE and not (k in WHO_FIELDS and v is None)
    }


def fact_from_state(stream: str, type_: str, version: int, state: Mapping[str, Any]) -> Fact:
    """The Fact of an event of type `type_` and `version` whose fields are `state` (a
    decoded event's `__dict__`, or an `@event` body's arguments)."""
    return Fact(
        stream,
        type_,
        version,
        state["effective_at"],
        state["recorded_at"],
        fact_data(state),
        state.get("cause"),
    )


def fact_from_event(stream: str, event: Any) -> Fact:
    """The Fact an aggregate remembers for this decoded event (see Account._remember)."""
    return fact_from_state(stream, type(event).__name__, event.originator_version, vars(event))


def correction_event(
    event_class: type[Aggregate.Event],
    originator_id: UUID,
    fact: Fact,
    who: Who,
    timestamp: datetime | None = None,
) -> Aggregate.Event:
    """The event (of `event_class`, the aggregate's own) a rule-caused hosting correction
    (rules.hosting_corrections) is recorded as: the event the aggregate's method would
    trigger, field for field in the same order (the stored form, which the integrity
    chain hashes)."""
    if fact.type not in HOSTING_EVENTS:
        raise ValueError(f"not a hosting correction: {fact.type}")
    made: Aggregate.Event = event_class(  # type: ignore[call-arg]
        originator_id=originator_id,
        originator_version=fact.version,
        timestamp=timestamp or event_class.create_timestamp(),
        reason=fact.data["reason"],
        effective_at=fact.effective_at,
        recorded_at=fact.recorded_at,
        cause=dict(fact.cause or {}),
        actor=who.get("actor"),
        command_id=who.get("command_id"),
    )
    return made


def fact_row(f: Fact) -> list[Any]:
    """A Fact as a snapshot keeps it: a JSON array, times in ISO 8601 with their offset."""
    return [
        f.stream,
        f.type,
        f.version,
        f.effective_at.isoformat(),
        f.recorded_at.isoformat(),
        f.data,
        f.cause,
    ]


def fact_from_row(row: list[Any], stream_name: str | None = None) -> Fact:
    """`fact_row`'s inverse (its stream named `stream_name` when given: a reader that
    knows it better); a row of another shape (a damaged or foreign file) is a TypeError."""
    stream, type_, version, effective_at, recorded_at, data, cause = row
    stream = stream_name if stream_name is not None else stream
    if not (
        isinstance(stream, str)
        and isinstance(type_, str)
        and type(version) is int
        and isinstance(data, dict)
        and (cause is None or isinstance(cause, dict))
    ):
        raise TypeError("a fact of the wrong shape")
    effective, recorded = datetime.fromisoformat(effective_at), datetime.fromisoformat(recorded_at)
    if effective.tzinfo is None or recorded.tzinfo is None:
        raise TypeError("a time without an offset")
    return Fact(stream, type_, version, effective, recorded, data, cause)


def standin(index: int, type_: str, data: dict[str, Any], cause: dict[str, Any] | None) -> Fact:
    """The check index's stand-in for an account's event `index` (in effective order): the
    data and cause the rules read, no stream and no times (those are the account's own,
    put back when a `because` is read)."""
    return Fact("", type_, index, EPOCH, EPOCH, data, cause)


class KeepsFacts(Aggregate):
    """An aggregate that keeps its own events as Facts, in effective order: the Facts a
    reader of the log makes of them (`fact_from_state`), which its commands are validated
    against. Each `@event` body hands its arguments to `_remember`."""

    @property
    def stream(self) -> str:
        """The stream its Facts name ("account:<id>", "region:<code>")."""
        raise NotImplementedError

    @classmethod
    def event_from_fact(
        cls,
        name: str,
        fact: Fact,
        who: Who = NOBODY,
        originator_id: UUID | None = None,
        timestamp: datetime | None = None,
    ) -> Aggregate.Event:
        """The event a rule-caused correction (rules.hosting_corrections) of the aggregate
        `name` is recorded as, without the aggregate: a fan-out over many accounts reads
        their facts, not their aggregates. The same event the aggregate's own method
        would trigger (`Account.reconcile_hosting`). `originator_id`: the aggregate's id
        when the caller knows it already; `timestamp`: the library's creation time, when
        one is shared by a whole batch."""
        event_class = getattr(cls, fact.type, Aggregate.Event)  # (made by @event)
        originator_id = originator_id or cls.create_id(name)
        return correction_event(event_class, originator_id, fact, who, timestamp)

    def _remember(self, type_: str, fields: dict[str, Any]) -> None:
        """Keep the event of type `type_` with `fields` (its method's arguments, as it
        received them) as a Fact. (An event body runs before the aggregate's version moves
        on, hence version + 1; the created event, which starts `facts`, is version 1.)"""
        facts: list[Fact] = self.__dict__.setdefault("facts", [])
        version = self.version + 1 if facts else 1
        bisect.insort(facts, fact_from_state(self.stream, type_, version, fields), key=_order)


def _order(f: Fact) -> tuple[datetime, int]:
    return f.order
