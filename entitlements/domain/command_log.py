"""The command log: one record per `command_id`, saved in the same transaction as the
events the command recorded (or alone, for a rejection).

The store keys every aggregate by (id, version), and a record's id is derived from its
`command_id`, so a second record of the same command cannot be saved: a command is decided
exactly once across processes, files and restarts. The records that say "rejected" are
the rejection log: the command as given, who asked, the reason, both clocks. Both kinds
take part in the log's order like every other event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEventProtocol, event

from entitlements.domain.events import (
    COMMAND_APPLIED,
    COMMAND_REJECTED,
    FAN_OUT_COMPLETED,
    stable_id,
    topic,
)


def command_uuid(command_id: str) -> UUID:
    """A command record's aggregate id: derived from its command_id, so it is unique."""
    return stable_id("command", command_id)


def conflict_key(command_id: str, fingerprint: str) -> str:
    """What identifies an attempt to reuse `command_id` for another command (that
    fingerprint): the same attempt again is a duplicate of its rejection."""
    return f"{command_id}\n{fingerprint}"  # a command_id has no newline


def conflict_uuid(command_id: str, fingerprint: str) -> UUID:
    """The record id of that attempt's rejection: the same attempt, the same record."""
    return stable_id("conflict", conflict_key(command_id, fingerprint))


class AppliedCommand(Aggregate):
    """A command that was applied: what it was (name and fingerprint), who asked, and the
    account or region it changed. A hosting rule's fan-out, when done, is version 2."""

    TOPIC = topic("AppliedCommand")

    class Created(Aggregate.Created):  # the library's base "created" class; never stored
        TOPIC = topic("AppliedCommand.Created")

    @staticmethod
    def create_id(command_id: str) -> UUID:
        return command_uuid(command_id)

    @event(COMMAND_APPLIED, topic=topic(COMMAND_APPLIED))
    def __init__(
        self,
        command_id: str,
        command: str,
        fingerprint: str,
        actor: str | None,
        account_id: str | None,
        region: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        fan_out: bool = False,
        jurisdiction: str | None = None,
    ) -> None:
        """`fan_out`: the command switched a hosting rule, whose fan-out to the region's
        accounts follows; until FanOutCompleted, the next writer finishes it.
        `jurisdiction`: who asked (a region code or 'platform'; None: not given), so that
        an auditor reads it here (records from before it was kept lack the field)."""
        self.command_id = command_id
        self.fan_out_done = not fan_out

    @event(FAN_OUT_COMPLETED, topic=topic(FAN_OUT_COMPLETED))
    def fan_out_completed(self, region: str, recorded_at: datetime) -> None:
        """Every account of the region has the hosting rule's events (see Engine.fan_out)."""
        self.fan_out_done = True


class RejectedCommand(Aggregate):
    """A command that a domain rule refused: the command as given, who asked, the reason.
    Nothing else was recorded for it."""

    TOPIC = topic("RejectedCommand")

    class Created(Aggregate.Created):  # the library's base "created" class; never stored
        TOPIC = topic("RejectedCommand.Created")

    @staticmethod
    def create_id(command_id: str, fingerprint: str, conflict: bool = False) -> UUID:
        # A command_id already used for another command is rejected too, and recorded as an
        # attempt of its own (the id stays with the command that first used it), once.
        return conflict_uuid(command_id, fingerprint) if conflict else command_uuid(command_id)

    @event(COMMAND_REJECTED, topic=topic(COMMAND_REJECTED))
    def __init__(
        self,
        command_id: str,
        command: str,
        fingerprint: str,
        actor: str | None,
        account_id: str | None,
        region: str | None,
        effective_at: datetime,
        recorded_at: datetime,
        reason: str,
        request: dict[str, Any],
        conflict: bool = False,
    ) -> None:
        self.command_id = command_id


# -- the record events, made directly (the engine saves them; no aggregate is kept) ----


def applied_record(command_id: str, **fields: Any) -> DomainEventProtocol[UUID]:
    """The CommandApplied event an `AppliedCommand(...)` would record, made directly: the
    aggregate is never used again, and building it costs about four times the event.
    `fields`: the rest of `AppliedCommand.__init__`'s arguments, by name."""
    originator_id = command_uuid(command_id)
    return _record(AppliedCommand, COMMAND_APPLIED, originator_id, command_id=command_id, **fields)


def rejected_record(
    command_id: str, fingerprint: str, conflict: bool = False, **fields: Any
) -> DomainEventProtocol[UUID]:
    """The CommandRejected event a `RejectedCommand(...)` would record, made directly (see
    RejectedCommand.create_id: a conflicting id is an attempt of its own, recorded once).
    `fields`: the rest of `RejectedCommand.__init__`'s arguments, by name."""
    return _record(
        RejectedCommand,
        COMMAND_REJECTED,
        RejectedCommand.create_id(command_id, fingerprint, conflict),
        command_id=command_id,
        fingerprint=fingerprint,
        conflict=conflict,
        **fields,
    )


def _record(
    aggregate: type[AppliedCommand | RejectedCommand], name: str, originator_id: UUID, **fields: Any
) -> DomainEventProtocol[UUID]:
    """The event `name` that `aggregate`'s `__init__` records, with `fields`: its class,
    made by `@event` from that signature, refuses a missing or unknown field, and keeps
    them in the signature's order (the stored form) whatever order they come in."""
    cls: Any = getattr(aggregate, name)
    made: DomainEventProtocol[UUID] = cls(
        originator_id=originator_id,
        originator_version=1,
        timestamp=cls.create_timestamp(),
        originator_topic=aggregate.TOPIC,
        **fields,
    )
    return made
