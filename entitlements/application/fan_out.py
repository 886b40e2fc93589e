"""Region rules reaching accounts: a hosting rule's fan-out over every account of its
region, finishing the fan-outs a command recorded but did not complete, and `reconcile`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import IntegrityError

from entitlements.adapters.store import WriterLock
from entitlements.application import retries
from entitlements.application.aggregates import Aggregates
from entitlements.application.command_book_file import CommandBooks
from entitlements.application.sealing import Saver
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.command_log import AppliedCommand, command_uuid
from entitlements.domain.region import Region, RegionRules
from entitlements.domain.rules import (
    NOBODY,
    FreeHostingSwitches,
    Who,
    free_hosting_switches,
    hosting_corrections,
)
from entitlements.domain.times import now
from projections.projector import Projector, gc_paused

# Events per transaction when a region rule fans out (fewer, larger commits: the store's
# random-key index makes each commit touch about one page per event).
FAN_OUT_BATCH = 10_000


@dataclass
class FanOut:
    """Records a region's hosting rule on its accounts, as their own events."""

    projector: Projector
    writer: WriterLock
    saver: Saver
    aggregates: Aggregates
    books: CommandBooks

    def catch_up(self) -> int:
        """Bring the index level with the log (before a fan-out reads accounts from it)."""
        return self.projector.catch_up()

    def finish_all(self) -> None:
        """Finish every hosting fan-out that a command recorded but did not complete (its
        process died halfway, or the store failed): called by every writer before its own
        commands, under the writer lock. What is missing is recorded at the store's newest
        recorded_at, as the interrupted fan-out would have recorded it."""
        for command_id, (code, actor) in list(self.books.book.pending_fan_outs.items()):
            recorded_at = self.projector.log.newest_recorded_at or now()
            self.finish(command_id, code, recorded_at, {"actor": actor, "command_id": command_id})

    def finish(self, command_id: str, code: str, recorded_at: datetime, who: Who) -> int | None:
        """The fan-out of the command `command_id`, then its FanOutCompleted."""
        done = AppliedCommand.FanOutCompleted(  # type: ignore[attr-defined]
            originator_id=command_uuid(command_id),
            originator_version=2,
            timestamp=AppliedCommand.FanOutCompleted.create_timestamp(),  # type: ignore[attr-defined]
            region=code,
            recorded_at=recorded_at,
        )
        return self.fan_out(self.aggregates.rules(code), recorded_at, who, then=done)

    def fan_out(
        self,
        region: Region | RegionRules,
        recorded_at: datetime,
        who: Who = NOBODY,
        then: DomainEventProtocol[UUID] | None = None,
    ) -> int | None:
        """Record the region's hosting rule on every account of the region that needs it,
        reading each account's facts from the check index (no aggregate loads), many accounts
        per transaction; `then` (the command's FanOutCompleted) goes in the last one. Each
        account's events are saved whole or not at all; running it again records only what
        is still missing. Called under the writer lock (held throughout, so the fan-out's
        events keep the rule's recorded_at and the log's clock order).

        The region's switches are prepared once (`rules.FreeHostingSwitches`): most accounts
        have one fact, their registration, and their corrections follow from the switches
        directly, without folding."""
        with gc_paused():
            return self._fan_out(region, recorded_at, who, then)

    def _fan_out(
        self,
        region: Region | RegionRules,
        recorded_at: datetime,
        who: Who,
        then: DomainEventProtocol[UUID] | None,
    ) -> int | None:
        position = None
        log = self.projector.log
        members = list(log.members.get(region.code, ()))
        switches = FreeHostingSwitches(free_hosting_switches(region.facts))
        start, conflicts = 0, 0
        while True:
            events: list[DomainEventProtocol[UUID]] = []
            end = start
            stamp = Aggregate.Event.create_timestamp()  # the batch's events are made at once
            while end < len(members) and len(events) < FAN_OUT_BATCH:
                account_id = members[end]
                facts = log.account_facts(account_id)
                corrections = hosting_corrections(facts, region.facts, recorded_at, switches)
                if corrections:
                    originator_id = account_uuid(account_id)
                    log.name_stream(originator_id, account_id)
                    events.extend(
                        Account.event_from_fact(account_id, f, who, originator_id, stamp)
                        for f in corrections
                    )
                end += 1
            last = end >= len(members)
            if last and then is not None:
                events.append(then)
            try:
                position = self.saver.save_events(events) or position
            except IntegrityError:  # a writer that bypassed the lock got there first
                conflicts += 1
                if conflicts == retries.RETRIES:
                    raise
                retries.backoff(conflicts)
                self.catch_up()
                continue  # recompute this slice from fresh facts
            if last:
                return position
            start, conflicts = end, 0

    def reconcile(self, region: str | None = None, actor: str = "reconcile") -> int:
        """Complete the hosting fan-out of every region (or one): finishes interrupted
        fan-outs, then records whatever else is missing, at the current time. Returns
        events recorded."""
        with self.writer:
            self.catch_up()
            before = self.projector.log.position
            self.finish_all()
            recorded_at = max(now(), self.projector.log.newest_recorded_at or now())
            for code in [region] if region else sorted(self.projector.log.regions):
                self.fan_out(self.aggregates.rules(code), recorded_at, {"actor": actor})
            self.catch_up()
            return self.projector.log.position - before
