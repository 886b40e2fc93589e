"""A record the store holds but that cannot be read as one: a row rewritten behind the
engine's back (an SQL UPDATE, a bad restore). Every reading command meets it through the
mapper; it says which position, once, and points at `entitlements audit verify`, which
tells what changed there, instead of the library's deserialisation error."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent

from entitlements.adapters.integrity import one_line, read_state

LOOKUP_PAGE = 1000  # notifications per select while finding a damaged event's position


class DamagedRecord(Exception):
    """The record at `position` (None: not found) cannot be read; `detail` says why."""

    def __init__(self, position: int | None, detail: str) -> None:
        super().__init__(position, detail)  # its args: it crosses to another process as is
        self.position, self.detail = position, detail

    def __str__(self) -> str:
        where = f"the record at position {self.position}" if self.position else "a record"
        return (
            f"{where} cannot be read ({self.detail}): the store was changed behind the "
            "engine's back; `entitlements audit verify` says where and how"
        )


class CheckedMapper(Mapper[UUID]):
    """The library's mapper, whose failures on a stored event are a DamagedRecord naming
    its position. `recorder` (set by the application) finds the position of an event read
    by its stream (a Notification carries its own)."""

    recorder: Any = None

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        try:
            return super().to_domain_event(stored_event)
        except Exception as e:  # noqa: BLE001 - any content may be there: each fails its way
            raise DamagedRecord(self._position(stored_event), self._why(stored_event, e)) from e

    def _why(self, stored: StoredEvent, error: Exception) -> str:
        try:
            read_state(self, stored.state)
        except ValueError as e:
            return str(e)
        return one_line(error.__cause__ or error)

    def _position(self, stored: StoredEvent) -> int | None:
        """The event's position: the notification's own, else looked up among the rows of
        its topic (only when reading failed: a walk, but an error path)."""
        position = getattr(stored, "id", None)
        if isinstance(position, int) or self.recorder is None:
            return position if isinstance(position, int) else None
        try:
            start = 1
            while True:
                page = self.recorder.select_notifications(
                    start=start, limit=LOOKUP_PAGE, topics=(stored.topic,)
                )
                for n in page:
                    if (n.originator_id, n.originator_version) == (
                        stored.originator_id,
                        stored.originator_version,
                    ):
                        return int(n.id)
                if len(page) < LOOKUP_PAGE:
                    return None
                start = page[-1].id + 1
        except Exception:  # noqa: BLE001 - the lookup only adds the position to the message
            return None
