"""A group: the commands that share one transaction, decided one after another (each
against what the earlier ones decided) and saved together by the group commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEventProtocol

from entitlements.domain.account import Account
from entitlements.domain.region import Region
from entitlements.domain.rules import Who

_GROUP_ID = UUID(int=0)


class Outcome(NamedTuple):
    """A command's result inside its group, before the group's commit gives positions."""

    n: int
    command: str
    status: str
    reason: str | None
    command_id: str
    duplicate: bool
    record: int | None  # the group event whose position is the result's (its record)
    position: int | None  # known already: a command on file before the group
    fingerprint: str

    @classmethod
    def on_file(
        cls,
        n: int,
        command: str,
        command_id: str,
        fingerprint: str,
        status: str,
        reason: str | None,
        position: int | None,
    ) -> Outcome:
        """A repeat of a command already in the log: its first result, at its position."""
        return cls(n, command, status, reason, command_id, True, None, position, fingerprint)


@dataclass
class Group:
    """Commands that share one transaction: their events in command order, the aggregates
    they changed (later commands of the group decide against these, pending events and
    all), and their results waiting for the commit."""

    events: list[DomainEventProtocol[UUID]] = field(default_factory=list)
    accounts: dict[str, Account] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    decided: dict[str, Outcome] = field(default_factory=dict)  # command_id -> first outcome
    touched: list[Account | Region] = field(default_factory=list)  # by the current command
    newest: datetime | None = None  # the group's newest recorded_at
    fan_out: tuple[str, str, datetime, Who] | None = None  # command_id, region, recorded_at, who
    spoiled: bool = False  # a rejected command left events on a shared aggregate

    def add(
        self, recorded_at: datetime, record: DomainEventProtocol[UUID], *aggregates: Aggregate
    ) -> None:
        """A command's events: its aggregates' pending ones, then its record (last: its
        position is the command's)."""
        for aggregate in aggregates:
            self.events.extend(aggregate.collect_events())
        self.events.append(record)
        if self.newest is None or recorded_at > self.newest:
            self.newest = recorded_at

    def decided_now(
        self, n: int, command: str, reason: str | None, command_id: str, fingerprint: str
    ) -> Outcome:
        """The outcome of a command decided in this group (applied, or rejected when
        `reason`): its record is the group's last event, its position known once committed."""
        status = "rejected" if reason is not None else "applied"
        record = len(self.events) - 1
        outcome = Outcome(n, command, status, reason, command_id, False, record, None, fingerprint)
        self.outcomes.append(outcome)
        return outcome

    # `Application.save` takes aggregates or events; an event costs it a runtime Protocol
    # isinstance (about 40 us). The group goes in as one object that has events to collect.
    @property
    def id(self) -> UUID:
        return _GROUP_ID

    def collect_events(self) -> list[DomainEventProtocol[UUID]]:
        return self.events
