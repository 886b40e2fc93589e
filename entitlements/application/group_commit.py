"""Group commit: many commands per transaction under the writer lock, in spans that let
other writers in; a group that fails is applied again one command per transaction, a
conflict retried with backoff, and a commit whose acknowledgement was lost told from a
conflict by the log itself."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, PersistenceError

from entitlements.adapters.store import StoreUnavailable, WriterLock
from entitlements.application import retries
from entitlements.application.aggregates import Aggregates
from entitlements.application.command_book_file import CommandBooks
from entitlements.application.fan_out import FanOut
from entitlements.application.group import Group, Outcome
from entitlements.application.handlers import Handlers
from entitlements.application.sealing import Saver
from entitlements.application.store_app import EntitlementsApplication
from entitlements.domain.commands import Command
from entitlements.domain.decisions import CommandResult
from entitlements.domain.events import COMMAND_RECORDS
from projections.projector import Projector

GROUP_MAX = 200  # commands saved per transaction (group commit), within one lock span
LOCK_SPAN = 0.1  # seconds a batch holds the writer lock before letting others in

Numbered = tuple[int, Command]


class GroupCommit:
    """Applies commands in groups, one transaction per group, yielding committed results."""

    def __init__(
        self,
        app: EntitlementsApplication,
        projector: Projector,
        writer: WriterLock,
        parts: tuple[Handlers, Saver, Aggregates, FanOut, CommandBooks],
    ) -> None:
        self.app = app
        self.projector = projector
        self.writer = writer
        self.handlers, self.saver, self.aggregates, self.fan_out, self.books = parts

    def catch_up(self) -> int:
        return self.projector.catch_up()

    def apply_iter(self, numbered: Iterable[Numbered]) -> Iterator[CommandResult]:
        """Apply validated commands in order, yielding each result once the transaction
        holding it has committed (see `Engine.apply_iter`)."""
        source = iter(numbered)
        pending = next(source, None)
        try:
            while pending is not None:
                with self.writer:
                    self.catch_up()
                    self.fan_out.finish_all()
                    span_ends = time.monotonic() + LOCK_SPAN
                    while pending is not None and time.monotonic() < span_ends:
                        taken: list[Numbered] = []
                        group = Group()
                        while pending is not None and len(taken) < GROUP_MAX:
                            taken.append(pending)
                            self.handlers.decide(*pending, group)
                            pending = next(source, None)
                            if group.fan_out is not None or time.monotonic() >= span_ends:
                                break  # a fan-out ends its group: it needs the rule on file
                        yield from self._commit(taken, group)
            self.catch_up()
        except StoreUnavailable:
            raise
        except PersistenceError as e:
            raise StoreUnavailable.from_error(e) from e

    def _decided(self, taken: list[Numbered]) -> Group:
        group = Group()
        for n, cmd in taken:
            self.handlers.decide(n, cmd, group)
        return group

    def _commit(self, taken: list[Numbered], group: Group) -> Iterator[CommandResult]:
        """Save a decided group in one transaction and yield its results once committed.
        A group that meets a conflict (a writer that bypassed the lock) or a store failure
        is applied again one command per transaction; a single command retries on fresh
        facts. A commit whose acknowledgement was lost (the log holds exactly our events)
        counts as committed."""
        positions: list[int] | None = None
        for attempt in range(retries.RETRIES):
            try:
                if group.spoiled:
                    raise IntegrityError("a rejected command left events on a shared aggregate")
                positions = self.saver.save_group(group)
                self.aggregates.keep(group)  # current now: kept for the next commands
                break
            except IntegrityError:
                self.aggregates.forget(group)
                self.catch_up()
                if group.events and not group.spoiled and self._all_on_file(group):
                    break  # committed after all: its positions are in the book
                if len(taken) > 1:
                    yield from self._one_by_one(taken)
                    return
                if attempt == retries.RETRIES - 1:
                    raise
                retries.backoff(attempt)
                self.catch_up()
                group = self._decided(taken)
            except PersistenceError:
                self.aggregates.forget(group)
                if len(taken) == 1:
                    raise
                self.catch_up()  # a store that is down fails here, once, for the group
                yield from self._one_by_one(taken)
                return
        yield from self._results(group, positions)

    def _one_by_one(self, taken: list[Numbered]) -> Iterator[CommandResult]:
        """A group that could not go in whole: each command decided again and committed alone."""
        for item in taken:
            yield from self._commit([item], self._decided([item]))

    def _results(self, group: Group, positions: list[int] | None) -> Iterator[CommandResult]:
        """A committed group's results; a region rule's fan-out (the last command of its
        group) finished first, its result at the fan-out's position."""
        results = [self._result(o, positions) for o in group.outcomes]
        if group.fan_out is None:
            yield from results
            return
        yield from results[:-1]
        command_id, code, recorded_at, who = group.fan_out
        position = self.fan_out.finish(command_id, code, recorded_at, who)
        last = results[-1]
        yield replace(last, position=position or last.position)

    def _result(self, o: Outcome, positions: list[int] | None) -> CommandResult:
        if o.position is not None:
            position = o.position
        elif positions is not None and o.record is not None:
            position = positions[o.record]
        else:  # a lost acknowledgement: the book read the command's record back
            position = self.books.book.position_of(o.command_id) or self.projector.log.position
        return CommandResult(
            o.n, o.command, o.status, o.reason, position, o.command_id, duplicate=o.duplicate
        )

    def _all_on_file(self, group: Group) -> bool:
        return all(self._on_file(event, group) for event in group.events)

    def _on_file(self, event: DomainEventProtocol[UUID], group: Group) -> bool:
        """Whether the log (as read so far) holds this very event of the group: same stream,
        version, type and recorded_at. Tells a commit whose acknowledgement was lost from a
        conflict. The event's stream is one of the group's aggregates."""
        if type(event).__name__ in COMMAND_RECORDS:
            return self.books.book.has_record(self.app, event)
        account = next((a for a in group.accounts.values() if a.id == event.originator_id), None)
        region = next((r for r in group.regions.values() if r.id == event.originator_id), None)
        log = self.projector.log
        if account is not None:
            facts = log.account_facts(account.account_id)
        elif region is not None:
            facts = log.region_facts(region.code)
        else:
            return False
        recorded_at = getattr(event, "recorded_at", None)
        return any(
            f.version == event.originator_version
            and f.type == type(event).__name__
            and f.recorded_at == recorded_at
            for f in facts
        )
