"""What the auditors' questions share: reading the log itself (its notifications in order,
decoded by the event-sourcing library's mapper), loading an aggregate as of a version, the
caller's times and region codes checked, and an event as auditors read it. The log is
read through one port, `AuditLog`, never the engine's Application directly. Apart from the
questions (entitlements/application/audit.py and its siblings) so that each question's module reads
only what it asks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from entitlements.adapters import integrity
from entitlements.adapters.integrity import Verification
from entitlements.application import integrity_check
from entitlements.application.engine import Engine
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.region import Region, region_id
from entitlements.domain.rules import Fact
from projections.log_reader import read_stored

PAGE = 1000  # notifications per select while walking the log
_TINY = timedelta(microseconds=1)


# -- small helpers --------------------------------------------------------------------------


def check_region_code(code: str) -> str:
    """A region code as DOMAIN.md has them (two upper-case letters), else a ValueError."""
    if len(code) != 2 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise ValueError(f"region: {code[:40]!r} is not a region code (two upper-case letters)")
    return code


class AuditLog:
    """The port through which the auditors' questions read the log: its notifications in
    order (through the one pager), a stored event decoded, an aggregate as of a version, the
    head and its stored hash, the chain verified. Built from the engine once per question;
    the only place the questions meet the event-sourcing library's Application."""

    def __init__(self, engine: Engine) -> None:
        self._app = engine.app
        self._position = engine.position

    def head(self) -> tuple[int, str | None]:
        """The log's head: its position and the integrity chain's hash there, as stored (one
        row read; `verify` is what checks it)."""
        position = self._position()
        return position, self.stored_hash(position)

    def stored_hash(self, position: int) -> str | None:
        """The chain hash the record at `position` carries, as stored."""
        return integrity.stored_hash(self._app, position)

    def notifications(self, stop: int | None = None) -> Iterator[Any]:
        """The log's notifications in order (position = `n.id`), up to `stop`, not decoded."""
        for page in read_stored(self._app, 0, stop, page=PAGE):
            yield from page

    def decode(self, notification: Any) -> Any:
        """A stored event as its domain event (fields read by name: the log's own shape)."""
        event: Any = self._app.mapper.to_domain_event(notification)
        return event

    def account(self, account_id: str, version: int | None = None) -> Account:
        """The account as of `version` (None: now); UnknownAccount when it has no event."""
        try:
            account: Account = self._app.repository.get(account_uuid(account_id), version=version)
        except AggregateNotFoundError:
            raise UnknownAccount(account_id) from None
        return account

    def region_facts(self, code: str, version: int | None = None) -> list[Fact]:
        """A region's facts in effective order; none when the region has no event."""
        try:
            region: Region = self._app.repository.get(region_id(code), version=version)
        except AggregateNotFoundError:
            return []
        return list(region.facts)

    def positions(self, uuids: set[UUID], stop: int | None = None) -> dict[Any, int]:
        """(aggregate id, version) -> log position, for the given aggregates' events."""
        found: dict[Any, int] = {}
        for n in self.notifications(stop):
            if n.originator_id in uuids:
                found[(n.originator_id, n.originator_version)] = n.id
        return found

    def verify(self, receipt: tuple[str, int] | None = None) -> Verification:
        """The integrity chain recomputed over the whole log (see integrity_check)."""
        return integrity_check.verify(self._app, receipt)


def log_head(engine: Engine) -> tuple[int, str | None]:
    """The log's head: its position and the integrity chain's hash there, as stored."""
    return AuditLog(engine).head()


def event_view(f: Fact, position: int | None = None) -> dict[str, Any]:
    """An event as auditors read it: both clocks, who asked (always present, maybe null),
    the cause, and the event's own fields."""
    d = f.as_dict()
    out: dict[str, Any] = {"position": position} if position is not None else {}
    out.update(
        {
            "stream": d.pop("stream"),
            "type": d.pop("type"),
            "version": d.pop("version"),
            "effective_at": d.pop("effective_at"),
            "recorded_at": d.pop("recorded_at"),
            "actor": d.pop("actor", None),
            "command_id": d.pop("command_id", None),
            "cause": d.pop("cause"),
        }
    )
    out["data"] = d
    return out
