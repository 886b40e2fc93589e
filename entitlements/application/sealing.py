"""Every save of the writer: sealed onto the integrity chain (adapters/integrity.py) in the
order the events take in the log, saved, then taken in by this process's projector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol

from entitlements.adapters import integrity
from entitlements.application.group import Group
from entitlements.application.store_app import EntitlementsApplication
from projections.projector import Projector


class Saver:
    """Saves groups and ready-made events, sealed; remembers the chain's head it wrote."""

    def __init__(self, app: EntitlementsApplication, projector: Projector) -> None:
        self.app = app
        self.projector = projector
        # The integrity chain's head as this writer last saved it: (position, hash). Read
        # again from the store (one row) when the log moved on without us.
        self.chain_head: tuple[int, str] | None = None
        self.chain = True  # seal events (a benchmark switches it off to measure its cost)

    def save_group(self, group: Group) -> list[int]:
        """One transaction for the whole group, in command order; then the facts take the
        events in (the projector sees them only once committed). Returns each event's
        position."""
        if not group.events:
            return []
        sealed = self.seal(group.events)
        recordings = self.app.save(group)  # type: ignore[arg-type]
        self.sealed(recordings, sealed)
        self.projector.absorb(recordings)
        return [r.notification.id for r in recordings]

    def save_events(self, events: list[DomainEventProtocol[UUID]]) -> int | None:
        """Save ready-made events (no aggregate to collect them from) and take them in."""
        if not events:
            return None
        sealed = self.seal(events)
        recordings = self.app.events.put(events)
        self.sealed(recordings, sealed)
        self.projector.absorb(recordings)
        return recordings[-1].notification.id if recordings else None

    def seal(self, events: list[DomainEventProtocol[UUID]]) -> str | None:
        """Chain the events (integrity.seal) onto the log's head, in the order they will
        take in the log. Called under the writer lock, with the log level with the store:
        the head is the record at its position (ours, remembered, or read once)."""
        if not self.chain:
            return None
        position = self.projector.log.position
        head = self.chain_head
        if head is None or head[0] != position:
            head = self.chain_head = (position, integrity.head_at(self.app, position))
        return integrity.seal(events, head[1])

    def sealed(self, recordings: Sequence[Any], last: str | None) -> None:
        """The save committed: its last record is the chain's head now."""
        if last is not None and recordings:
            self.chain_head = (recordings[-1].notification.id, last)
