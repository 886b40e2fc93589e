"""The application service: apply commands (load, decide, save), fan out region rules,
and answer checks, history and capabilities.

    engine = open_engine("sqlite:///entitlements.db")
    engine.apply([{"command": "register_account", ...}])
    engine.check("cn-free-01", "host", at="2020-05-19")
"""

from __future__ import annotations

import os
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, assert_never
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    PersistenceError,
)

from entitlements.adapters import integrity
from entitlements.adapters.damaged import CheckedMapper
from entitlements.adapters.store import (
    StoreUnavailable,
    WriterLock,
    check_store,
    eventsourcing_env,
    install_clock_guard,
    store_url,
)
from entitlements.application.command_book import CommandBook
from entitlements.domain import commands as c
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.command_log import (
    AppliedCommand,
    applied_record,
    command_uuid,
    conflict_key,
    rejected_record,
)
from entitlements.domain.commands import Command, command_fingerprint, now, parse_commands
from entitlements.domain.decisions import (
    CommandResult,
    Decision,
    PositionNotReached,
    UnknownAccount,
)
from entitlements.domain.region import Region, RegionRules, region_id
from entitlements.domain.rules import (
    FREE_HOSTING_RULE,
    NOBODY,
    FreeHostingSwitches,
    Rejected,
    Who,
    check_jurisdiction,
    free_hosting_switches,
    hosting_corrections,
    iso,
)
from projections import snapshot_digests
from projections.changes import changes_after
from projections.check_index import CheckIndex
from projections.facts import COMMAND_RECORDS, COMMAND_TOPICS, LogFacts, TakesEvents
from projections.follower import FollowStatus as FollowStatus  # re-exported: the doors read it
from projections.light_log import LightLog
from projections.log_reader import read_log
from projections.projector import SNAPSHOT_EVERY, Projector, gc_paused

FAN_OUT_BATCH = (
    10_000  # events per transaction when a region rule fans out (fewer, larger commits: the
)
# store's random-key index makes each commit touch about one page per event)
GROUP_MAX = 200  # commands saved per transaction (group commit), within one lock span
AGGREGATE_CACHE = 2048  # account and region aggregates kept between groups (each kind)
RETRIES = 30  # optimistic-concurrency retries per command, with jittered backoff
LOCK_SPAN = 0.1  # seconds a batch holds the writer lock before letting others in
WRITER_WAIT = (
    300.0  # seconds a command waits for the writer lock (a 1M-account fan-out holds it ~1 min)
)


REJECTION_TOPICS = frozenset({"entitlements:CommandRejected"})


class EntitlementsApplication(Application[UUID]):
    """The event store of account and region aggregates."""

    name = "Entitlements"

    def construct_recorder(self) -> ApplicationRecorder:
        """The library's recorder; the mapper (a CheckedMapper: a stored event that cannot
        be read is a DamagedRecord naming its position) is given it to find positions."""
        recorder = super().construct_recorder()
        self.mapper.recorder = recorder  # type: ignore[attr-defined]
        return recorder

    def construct_mapper(self) -> Mapper[UUID]:
        return self.factory.mapper(self.construct_transcoder(), CheckedMapper)


_A = TypeVar("_A", Account, Region)
_GROUP_ID = UUID(int=0)


class _Outcome(NamedTuple):
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


@dataclass
class _Group:
    """Commands that share one transaction: their events in command order, the aggregates
    they changed (later commands of the group decide against these, pending events and
    all), and their results waiting for the commit."""

    events: list[DomainEventProtocol[UUID]] = field(default_factory=list)
    accounts: dict[str, Account] = field(default_factory=dict)
    regions: dict[str, Region] = field(default_factory=dict)
    outcomes: list[_Outcome] = field(default_factory=list)
    decided: dict[str, _Outcome] = field(default_factory=dict)  # command_id -> first outcome
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

    # `Application.save` takes aggregates or events; an event costs it a runtime Protocol
    # isinstance (about 40 us). The group goes in as one object that has events to collect.
    @property
    def id(self) -> UUID:
        return _GROUP_ID

    def collect_events(self) -> list[DomainEventProtocol[UUID]]:
        return self.events


class Engine:
    """Apply commands to the log and answer what each account may do."""

    def __init__(
        self, url: str | None = None, *, start: bool = True, must_exist: bool = False
    ) -> None:
        """Open the store at `url` (see store.store_url); `must_exist` refuses to create an
        SQLite file (a read on a typo'd path). A server that refuses us says why, at once."""
        self.url = store_url(url)
        check_store(self.url, must_exist)
        self.writer = WriterLock(self.url, timeout=WRITER_WAIT)
        # Tables are created under the writer lock: two processes opening a new PostgreSQL
        # store at once would otherwise race in the catalog ("tuple concurrently updated").
        self.app = EntitlementsApplication(env={**eventsourcing_env(self.url), "CREATE_TABLE": "n"})
        with self.writer:
            self.app.recorder.create_table()  # type: ignore[attr-defined]
            install_clock_guard(self.url, self.app.recorder.events_table_name)  # type: ignore[attr-defined]
        self.projector = Projector(self.app, self.url)
        self.wait_timeout = 2.0  # seconds a min_position check waits for the index
        self.index: CheckIndex = self.projector.index
        self._book: CommandBook | None = None  # built by the first command (see `book`)
        self._book_saved = 0  # the position of the book's file
        self._book_refused = False  # its file was refused: replace it at `close`
        self._account_cache: OrderedDict[str, Account] = OrderedDict()
        self._region_cache: OrderedDict[str, Region] = OrderedDict()
        # The integrity chain's head as this writer last saved it: (position, hash). Read
        # again from the store (one row) when the log moved on without us.
        self._chain_head: tuple[int, str] | None = None
        self.chain = True  # seal events (a benchmark switches it off to measure its cost)
        if start:
            self.projector.start()

    @property
    def log(self) -> TakesEvents:
        """The log as this process holds it, level with the store under the writer lock:
        what commands and fan-outs are decided with (a LightLog: no Fact per account; an
        account's facts are read back from the check index when a command needs them)."""
        return self.projector.log

    @property
    def facts(self) -> LogFacts:
        """Every account's facts at once, for tests and tools (built from the index when the
        process keeps none: a copy, it does not follow the log). The writer never needs it."""
        log = self.projector.log
        return log.materialize() if isinstance(log, LightLog) else log

    @property
    def book(self) -> CommandBook:
        """The writer's memory of the command log, built when a command first needs it (a
        process that only checks never holds one): from its file, if that is of this very
        log, then the command records after it, then kept level by the projector."""
        if self._book is None:
            with self.projector.lock:
                loaded = self._load_book()
                book = loaded or CommandBook()
                self._book_saved = book.position  # what its file holds already
                stop = self.log.position
                if book.position < stop:
                    for page in read_log(self.app, book.position, stop, topics=COMMAND_TOPICS):
                        book.take(page, page[-1][0])
                book.position = stop
                self.projector.on_records.append(book.take)
                self._book = book
        return self._book

    def _book_file(self) -> Path | None:
        index = self.projector.snapshot_file
        return index.with_suffix(".commands") if index is not None else None

    def _load_book(self) -> CommandBook | None:
        """The book in its file, if the file is of this very log and on record in the store
        (see snapshot_digests.py); anything else is ignored (said on stderr, counted)."""
        path = self._book_file()
        if path is None or not path.exists():
            return None
        loaded = CommandBook.load(path)
        if loaded is None:
            snapshot_digests.refuse("commands", path, "not a command book of this schema")
            self._book_refused = True
            return None
        book, head, digest = loaded
        why = (
            f"past the log's position {self.log.position}"
            if book.position > self.log.position
            else self.projector.unbound("commands", book.position, digest, head)
        )
        if why is not None:
            snapshot_digests.refuse("commands", path, why)
            self._book_refused = True
            return None
        return book

    def _save_book(self) -> None:
        path, book = self._book_file(), self._book
        if path is None or book is None:
            return
        if not self._book_refused and book.position - self._book_saved < SNAPSHOT_EVERY:
            return
        with self.projector.lock:
            head = self.projector.fingerprint(book.position)
            bind = self.projector.bind("commands", head)
            book.save(path, head, f".tmp{os.getpid()}", bind)
            self._book_refused = False

    def close(self) -> None:
        self.projector.stop()
        self._save_book()
        self.writer.close()
        self.app.close()

    def catch_up(self) -> int:
        """Bring this process's index level with the log; returns events read."""
        return self.projector.catch_up()

    def follow(
        self,
        interval: float = 0.05,
        on_advance: Callable[[int], None] | None = None,
        on_status: Callable[[FollowStatus], None] | None = None,
    ) -> None:
        """Keep the index level with the log in a background thread (LISTEN/NOTIFY on
        PostgreSQL, polling every `interval` s on SQLite) that outlives store errors;
        `on_advance(position)` is told, from that thread, each time the index moved on,
        and `on_status(status)` each time following changed state (lost the store, back)."""
        if on_advance is not None:
            self.projector.on_advance.append(on_advance)
        if on_status is not None:
            self.projector.on_status.append(on_status)
        self.projector.follow(interval)

    def follower_status(self) -> FollowStatus:
        """How following the log goes (state, position, stale_since, ...): cheap, any thread."""
        return self.projector.status

    def wait_for(self, position: int, timeout: float | None = None) -> None:
        """Read your writes: return once the index has reached `position`."""
        timeout = self.wait_timeout if timeout is None else timeout
        if not self.projector.wait_for(position, timeout):
            raise PositionNotReached(position, self.index.position, timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------

    def apply(self, commands: Iterable[Mapping[str, Any]]) -> list[CommandResult]:
        """Validate the whole batch (MalformedCommand names item and field; nothing is
        applied), then apply each command; a domain rejection is a result, not an error."""
        return self.apply_parsed(list(enumerate(parse_commands(enumerate(commands, 1), "item"), 1)))

    def apply_parsed(self, numbered: Sequence[tuple[int, Command]]) -> list[CommandResult]:
        """Apply already validated commands, in order; see `apply_iter`."""
        return list(self.apply_iter(numbered))

    def apply_iter(self, numbered: Iterable[tuple[int, Command]]) -> Iterator[CommandResult]:
        """Apply validated commands in order, yielding each result once the transaction
        holding it has committed (so a result shown was applied). Group commit: up to
        GROUP_MAX commands share one transaction, each deciding against what the earlier
        ones of its group decided; a group that fails to save is applied again one
        command per transaction, so one bad command loses no other. Runs under the
        store's writer lock, in spans of at most LOCK_SPAN seconds with a catch-up (and
        any unfinished fan-out finished) at the start of each span, so other writers get
        their turn. The index has caught up when the iteration ends. `numbered` is read
        as it is needed (a file streams through: only a group is held at a time)."""
        source = iter(numbered)
        pending = next(source, None)
        try:
            while pending is not None:
                with self.writer:
                    self.catch_up()
                    self._finish_fan_outs()
                    span_ends = time.monotonic() + LOCK_SPAN
                    while pending is not None and time.monotonic() < span_ends:
                        taken: list[tuple[int, Command]] = []
                        group = _Group()
                        while pending is not None and len(taken) < GROUP_MAX:
                            taken.append(pending)
                            self._decide(*pending, group)
                            pending = next(source, None)
                            if group.fan_out is not None or time.monotonic() >= span_ends:
                                break  # a fan-out ends its group: it needs the rule on file
                        yield from self._commit(taken, group)
            self.catch_up()
        except StoreUnavailable:
            raise
        except PersistenceError as e:
            raise StoreUnavailable.from_error(e) from e

    def _decided(self, taken: list[tuple[int, Command]]) -> _Group:
        group = _Group()
        for n, cmd in taken:
            self._decide(n, cmd, group)
        return group

    def _commit(self, taken: list[tuple[int, Command]], group: _Group) -> Iterator[CommandResult]:
        """Save a decided group in one transaction and yield its results once committed.
        A group that meets a conflict (a writer that bypassed the lock) or a store failure
        is applied again one command per transaction; a single command retries on fresh
        facts. A commit whose acknowledgement was lost (the log holds exactly our events)
        counts as committed."""
        positions: list[int] | None = None
        for attempt in range(RETRIES):
            try:
                if group.spoiled:
                    raise IntegrityError("a rejected command left events on a shared aggregate")
                positions = self._save_group(group)
                break
            except IntegrityError:
                self._forget(group)
                self.catch_up()
                if group.events and not group.spoiled and self._all_on_file(group):
                    break  # committed after all: its positions are in the book
                if len(taken) > 1:
                    for item in taken:
                        yield from self._commit([item], self._decided([item]))
                    return
                if attempt == RETRIES - 1:
                    raise
                _backoff(attempt)
                self.catch_up()
                group = self._decided(taken)
            except PersistenceError:
                self._forget(group)
                if len(taken) == 1:
                    raise
                self.catch_up()  # a store that is down fails here, once, for the group
                for item in taken:
                    yield from self._commit([item], self._decided([item]))
                return
        results = [self._result(o, positions) for o in group.outcomes]
        if group.fan_out is None:
            yield from results
            return
        yield from results[:-1]  # a fan-out's command is the last of its group
        command_id, code, recorded_at, who = group.fan_out
        position = self._finish_fan_out(command_id, code, recorded_at, who)
        last = results[-1]
        yield replace(last, position=position or last.position)

    def _result(self, o: _Outcome, positions: list[int] | None) -> CommandResult:
        if o.position is not None:
            position = o.position
        elif positions is not None and o.record is not None:
            position = positions[o.record]
        else:  # a lost acknowledgement: the book read the command's record back
            position = self.book.position_of(o.command_id) or self.log.position
        return CommandResult(
            o.n, o.command, o.status, o.reason, position, o.command_id, duplicate=o.duplicate
        )

    def _decide(self, n: int, cmd: Command, group: _Group) -> None:
        """Decide one command into the group: a command already on file (or earlier in the
        group) gets its original result back; otherwise decide, record, answer."""
        if cmd.command_id is None:  # every command is on file under an id; the caller gave none
            cmd = cmd.model_copy(update={"command_id": f"api:{uuid4().hex}"})
        command_id = cmd.command_id
        assert command_id is not None
        fingerprint = command_fingerprint(cmd)
        earlier = group.decided.get(command_id)
        known = None if earlier is not None else self.book.outcome(self.app, command_id)
        first = earlier.fingerprint if earlier else known.fingerprint if known else None
        if first is not None and first != fingerprint:
            self._conflict(n, cmd, command_id, fingerprint, group)
            return
        if earlier is not None:  # decided earlier in this group: its result, once committed
            group.outcomes.append(earlier._replace(n=n, command=cmd.command, duplicate=True))
            return
        if known is not None:
            group.outcomes.append(
                _Outcome(
                    n,
                    cmd.command,
                    known.status,
                    known.reason,
                    command_id,
                    True,
                    None,
                    known.position,
                    fingerprint,
                )
            )
            return
        group.touched.clear()
        try:
            self._execute(cmd, command_id, fingerprint, group)
        except Rejected as e:
            if any(a.pending_events for a in group.touched):  # pragma: no cover - never so far
                group.spoiled = True
            self._reject(n, cmd, command_id, fingerprint, e.reason, group)
            return
        outcome = _Outcome(
            n,
            cmd.command,
            "applied",
            None,
            command_id,
            False,
            len(group.events) - 1,
            None,
            fingerprint,
        )
        group.outcomes.append(outcome)
        group.decided[command_id] = outcome

    def _conflict(
        self, n: int, cmd: Command, command_id: str, fingerprint: str, group: _Group
    ) -> None:
        """`command_id` was used for another command: rejected, and recorded once per
        attempt (this fingerprint); a repeat of a recorded attempt is its duplicate."""
        repeat = _repeated_conflict(self.book, self.app, n, cmd, fingerprint, group)
        if repeat is not None:
            group.outcomes.append(repeat)
            return
        reason = f"command_id {command_id} was used for a different command"
        self._reject(n, cmd, command_id, fingerprint, reason, group, conflict=True)
        group.decided[conflict_key(command_id, fingerprint)] = group.outcomes[-1]

    def _reject(
        self,
        n: int,
        cmd: Command,
        command_id: str,
        fingerprint: str,
        reason: str,
        group: _Group,
        conflict: bool = False,
    ) -> None:
        """Record the rejection (the rejection log) in the group. Its recorded_at is the
        command's, or the store's newest when the command's is earlier (the clock never
        goes back); the command as given keeps what it asked for."""
        newest = group.newest or self.log.newest_recorded_at
        stamped = max(t for t in (cmd.recorded_at or now(), newest) if t is not None)
        account_id: str | None = getattr(cmd, "account_id", None)
        record = rejected_record(
            command_id=command_id,
            command=cmd.command,
            fingerprint=fingerprint,
            actor=cmd.actor,
            account_id=account_id,
            region=getattr(cmd, "region", None) or self._region_of(account_id, group),
            effective_at=cmd.effective_at,
            recorded_at=stamped,
            reason=reason,
            conflict=conflict,
            request=cmd.model_dump(mode="json", exclude_none=True),
        )
        group.add(stamped, record)
        outcome = _Outcome(
            n,
            cmd.command,
            "rejected",
            reason,
            command_id,
            False,
            len(group.events) - 1,
            None,
            fingerprint,
        )
        group.outcomes.append(outcome)
        if not conflict:  # a conflicting id stays with the command that used it first
            group.decided[command_id] = outcome

    def _execute(self, cmd: Command, command_id: str, fingerprint: str, group: _Group) -> None:
        """Stamp and decide one command, against the facts and what the group decided
        before it; its events and its record join the group's."""
        newest = group.newest or self.log.newest_recorded_at
        recorded_at = cmd.recorded_at or max(now(), newest or now())
        if newest is not None and recorded_at < newest:
            raise Rejected(
                f"recorded_at {iso(recorded_at)} is earlier than the newest in the "
                f"store ({iso(newest)})"
            )
        match cmd:
            case c.AuthorizePartner() | c.ApplyRegionRule() | c.LiftRegionRule():
                self._execute_region_command(cmd, command_id, fingerprint, recorded_at, group)
            case _:
                self._execute_account_command(cmd, command_id, fingerprint, recorded_at, group)

    def _execute_account_command(
        self,
        cmd: c.AccountCommand,
        command_id: str,
        fingerprint: str,
        recorded_at: datetime,
        group: _Group,
    ) -> None:
        eff, who = cmd.effective_at, _who(cmd)
        if isinstance(cmd, c.RegisterAccount):
            # A sign-up racing another process's for the same id fails to save (version 1
            # exists), and its retry, after a catch-up, sees the account here.
            check_jurisdiction(cmd.jurisdiction, cmd.region, cmd.account_id)
            if self.log.has_account(cmd.account_id) or cmd.account_id in group.accounts:
                raise Rejected(f"account {cmd.account_id} already exists")
            region = self._rules(cmd.region, group)
            account = Account.register(
                cmd.account_id, region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at, who
            )
        else:
            account = self._account(cmd.account_id, group)
            account.accept_request_from(cmd.jurisdiction)
            region = self._rules(account.region, group)
            match cmd:
                case c.ApproveRegistration():
                    account.approve_registration(
                        region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at, who
                    )
                case c.OpenSubscription():
                    account.open_subscription(
                        region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at, who
                    )
                case c.CloseSubscription():
                    account.close_subscription(cmd.reason, eff, recorded_at, who)
                case c.MoveToPartner():
                    account.move_to_partner(region, cmd.partner, eff, recorded_at, who)
                case c.RevokeHosting():
                    account.revoke_hosting(cmd.reason, eff, recorded_at, who)
                case c.RestoreHosting():
                    account.restore_hosting(cmd.reason, eff, recorded_at, who)
                case c.SuspendAccount():
                    account.suspend(cmd.jurisdiction, cmd.reason, eff, recorded_at, who)
                case c.ReinstateAccount():
                    account.reinstate(cmd.reason, eff, recorded_at, who)
                case _:
                    assert_never(cmd)
        account.reconcile_hosting(region, recorded_at, who)
        record = self._applied(
            cmd, command_id, fingerprint, recorded_at, account.account_id, account.region
        )
        group.accounts[account.account_id] = account
        group.add(recorded_at, record, account)

    def _execute_region_command(
        self,
        cmd: c.RegionCommand,
        command_id: str,
        fingerprint: str,
        recorded_at: datetime,
        group: _Group,
    ) -> None:
        who = _who(cmd)
        region = self._region(cmd.region, cmd.effective_at, recorded_at, who, group)
        fans_out = False
        match cmd:
            case c.AuthorizePartner():
                region.authorize_partner(cmd.partner, cmd.effective_at, recorded_at, who)
            case c.ApplyRegionRule():
                region.apply_rule(cmd.rule, cmd.effective_at, recorded_at, who)
                fans_out = cmd.rule == FREE_HOSTING_RULE
            case c.LiftRegionRule():
                region.lift_rule(cmd.rule, cmd.effective_at, recorded_at, who)
                fans_out = cmd.rule == FREE_HOSTING_RULE
            case _:
                assert_never(cmd)
        record = self._applied(
            cmd, command_id, fingerprint, recorded_at, None, cmd.region, fan_out=fans_out
        )
        group.regions[cmd.region] = region
        group.add(recorded_at, record, region)
        if fans_out:  # the record says a fan-out is due until FanOutCompleted follows it
            group.fan_out = (command_id, cmd.region, recorded_at, who)

    @staticmethod
    def _applied(
        cmd: Command,
        command_id: str,
        fingerprint: str,
        recorded_at: datetime,
        account_id: str | None,
        region: str | None,
        fan_out: bool = False,
    ) -> DomainEventProtocol[UUID]:
        return applied_record(
            command_id=command_id,
            command=cmd.command,
            fingerprint=fingerprint,
            actor=cmd.actor,
            account_id=account_id,
            region=region,
            effective_at=cmd.effective_at,
            recorded_at=recorded_at,
            fan_out=fan_out,
            jurisdiction=getattr(cmd, "jurisdiction", None),  # region commands have none
        )

    def _finish_fan_outs(self) -> None:
        """Finish every hosting fan-out that a command recorded but did not complete (its
        process died halfway, or the store failed): called by every writer before its own
        commands, under the writer lock. What is missing is recorded at the store's newest
        recorded_at, as the interrupted fan-out would have recorded it."""
        for command_id, (code, actor) in list(self.book.pending_fan_outs.items()):
            recorded_at = self.log.newest_recorded_at or now()
            self._finish_fan_out(
                command_id, code, recorded_at, {"actor": actor, "command_id": command_id}
            )

    def _finish_fan_out(
        self, command_id: str, code: str, recorded_at: datetime, who: Who
    ) -> int | None:
        done = AppliedCommand.FanOutCompleted(  # type: ignore[attr-defined]
            originator_id=command_uuid(command_id),
            originator_version=2,
            timestamp=AppliedCommand.FanOutCompleted.create_timestamp(),  # type: ignore[attr-defined]
            region=code,
            recorded_at=recorded_at,
        )
        return self.fan_out(self._rules(code), recorded_at, who, then=done)

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
        log = self.log
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
                position = self._save_events(events) or position
            except IntegrityError:  # a writer that bypassed the lock got there first
                conflicts += 1
                if conflicts == RETRIES:
                    raise
                _backoff(conflicts)
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
            before = self.log.position
            self._finish_fan_outs()
            recorded_at = max(now(), self.log.newest_recorded_at or now())
            for code in [region] if region else sorted(self.log.regions):
                self.fan_out(self._rules(code), recorded_at, {"actor": actor})
            self.catch_up()
            return self.log.position - before

    def _save_events(self, events: list[DomainEventProtocol[UUID]]) -> int | None:
        """Save ready-made events (no aggregate to collect them from) and take them in."""
        if not events:
            return None
        sealed = self._seal(events)
        recordings = self.app.events.put(events)
        self._sealed(recordings, sealed)
        self.projector.absorb(recordings)
        return recordings[-1].notification.id if recordings else None

    def _seal(self, events: list[DomainEventProtocol[UUID]]) -> str | None:
        """Chain the events (integrity.seal) onto the log's head, in the order they will
        take in the log. Called under the writer lock, with the log level with the store:
        the head is the record at its position (ours, remembered, or read once)."""
        if not self.chain:
            return None
        position = self.log.position
        head = self._chain_head
        if head is None or head[0] != position:
            head = self._chain_head = (position, integrity.head_at(self.app, position))
        return integrity.seal(events, head[1])

    def _sealed(self, recordings: Sequence[Any], last: str | None) -> None:
        """The save committed: its last record is the chain's head now."""
        if last is not None and recordings:
            self._chain_head = (recordings[-1].notification.id, last)

    def _save_group(self, group: _Group) -> list[int]:
        """One transaction for the whole group, in command order; then the facts take the
        events in (the projector sees them only once committed) and the group's aggregates,
        now current, are kept for the next commands. Returns each event's position."""
        if not group.events:
            return []
        sealed = self._seal(group.events)
        recordings = self.app.save(group)  # type: ignore[arg-type]
        self._sealed(recordings, sealed)
        self.projector.absorb(recordings)
        for account in group.accounts.values():
            self._keep(self._account_cache, account.account_id, account)
        for region in group.regions.values():
            self._keep(self._region_cache, region.code, region)
        return [r.notification.id for r in recordings]

    def _forget(self, group: _Group) -> None:
        """A group that did not commit: its aggregates carry events the log lacks."""
        for account_id in group.accounts:
            self._account_cache.pop(account_id, None)
        for code in group.regions:
            self._region_cache.pop(code, None)
        for aggregate in group.touched:
            if isinstance(aggregate, Account):
                self._account_cache.pop(aggregate.account_id, None)
            else:
                self._region_cache.pop(aggregate.code, None)

    def _all_on_file(self, group: _Group) -> bool:
        return all(self._on_file(event, group) for event in group.events)

    def _on_file(self, event: DomainEventProtocol[UUID], group: _Group) -> bool:
        """Whether the log (as read so far) holds this very event of the group: same stream,
        version, type and recorded_at. Tells a commit whose acknowledgement was lost from a
        conflict. The event's stream is one of the group's aggregates."""
        if type(event).__name__ in COMMAND_RECORDS:
            return self.book.has_record(self.app, event)
        account = next((a for a in group.accounts.values() if a.id == event.originator_id), None)
        region = next((r for r in group.regions.values() if r.id == event.originator_id), None)
        if account is not None:
            facts = self.log.account_facts(account.account_id)
        elif region is not None:
            facts = self.log.region_facts(region.code)
        else:
            return False
        recorded_at = getattr(event, "recorded_at", None)
        return any(
            f.version == event.originator_version
            and f.type == type(event).__name__
            and f.recorded_at == recorded_at
            for f in facts
        )

    # -- aggregates: the group's own, else kept ones the facts prove current -------------

    @staticmethod
    def _keep(cache: OrderedDict[str, _A], key: str, aggregate: _A) -> None:
        cache[key] = aggregate
        cache.move_to_end(key)
        if len(cache) > AGGREGATE_CACHE:
            cache.popitem(last=False)

    def _account(self, account_id: str, group: _Group) -> Account:
        """The account as the group left it, else as the log has it: a kept aggregate
        whose version is the newest of its facts (no store read), else loaded. (A fan-out
        saves account events without the aggregate: the version tells.)"""
        account = group.accounts.get(account_id)
        if account is None:
            facts = self.log.account_facts(account_id)
            if not facts:  # the log is level with the store, under the writer lock
                raise Rejected(f"unknown account {account_id}")
            account = self._account_cache.get(account_id)
            if account is None or account.version != max(f.version for f in facts):
                try:
                    account = self.app.repository.get(account_uuid(account_id))
                except AggregateNotFoundError:
                    raise Rejected(f"unknown account {account_id}") from None
                self.log.name_stream(account.id, account_id)
            self._keep(self._account_cache, account_id, account)
        group.touched.append(account)
        return account

    def _rules(self, code: str, group: _Group | None = None) -> Region | RegionRules:
        """The region as the group left it, else its events as this process has caught up
        with them (no store read)."""
        if group is not None and code in group.regions:
            return group.regions[code]
        return RegionRules(code, tuple(self.log.region_facts(code)))

    def _region(
        self, code: str, effective_at: datetime, recorded_at: datetime, who: Who, group: _Group
    ) -> Region:
        """The region's aggregate (the group's, kept, or loaded); a new, unsaved one when
        the region has no events yet."""
        region = group.regions.get(code)
        if region is None:
            facts = self.log.regions.get(code)
            if not facts:
                return Region(
                    region=code, effective_at=effective_at, recorded_at=recorded_at, **who
                )
            region = self._region_cache.get(code)
            if region is None or region.version != max(f.version for f in facts):
                region = self.app.repository.get(region_id(code))
            self._keep(self._region_cache, code, region)
        group.touched.append(region)
        return region

    def _region_of(self, account_id: str | None, group: _Group) -> str | None:
        if account_id is None:
            return None
        if account_id in group.accounts:
            return group.accounts[account_id].region
        return self.log.account_region(account_id)

    # -- the change feed -----------------------------------------------------------------

    def changes(
        self, after: int = 0, limit: int = 100, wait: float = 0.0, *, catch_up: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Capability changes recorded after log position `after`, in log order, and the
        position to ask from next (see projections/changes.py). With nothing new, wait up
        to `wait` seconds for the log to move on (long polling). `catch_up=False` answers
        from the index as it stands (a process that follows the log is level with it)."""
        feed = self.projector.start_feed()
        if catch_up:
            self.catch_up()

        def read(after: int) -> tuple[list[dict[str, Any]], int]:
            # From the feed kept in memory; from the store for positions before it (the
            # events after `after`, each account's own stream, the region events kept).
            return feed.read(after, limit) or changes_after(self.app, after, limit, feed.regions)

        items, next_position = read(after)
        deadline = time.monotonic() + wait
        while not items and (left := deadline - time.monotonic()) > 0:
            if self.projector.wait_for(next_position + 1, left):
                items, next_position = read(next_position)
        return items, next_position

    # -- the command log -----------------------------------------------------------------

    def rejections(
        self, account_id: str | None = None, region: str | None = None
    ) -> list[dict[str, Any]]:
        """The rejection log, in log order: every rejected command as given, who asked, the
        reason and both clocks; only an account's or a region's when asked."""
        found = []
        for page in read_log(self.app, 0, topics=REJECTION_TOPICS):
            for position, e in page:
                if (account_id is None or e.account_id == account_id) and (
                    region is None or e.region == region
                ):
                    found.append(_rejection(position, e))
        return found

    # -- the log -------------------------------------------------------------------------

    def position(self) -> int:
        """The newest log position (notification id); 0 for an empty store."""
        return self.app.recorder.max_notification_id() or 0

    # -- checks: answered by the in-memory index -------------------------------------

    def check(
        self,
        account_id: str,
        capability: str,
        at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
        min_position: int | None = None,
    ) -> Decision:
        """What the account may do at `at` (default now) as known at `as_known_at`
        (default everything recorded). Never reads the store, except to catch up once
        when the account is not in the index yet. With `min_position` (the position an
        `apply` returned), answers only once the index has reached it, waiting at most
        `wait_timeout` s, else raises PositionNotReached naming the current position."""
        if min_position is not None:
            self.wait_for(min_position)
        try:
            return self.index.check(account_id, capability, at, as_known_at)
        except UnknownAccount:
            if not self.catch_up():
                raise
            return self.index.check(account_id, capability, at, as_known_at)

    def capabilities(
        self,
        account_id: str,
        at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
        min_position: int | None = None,
    ) -> list[Decision]:
        """Every capability at once, in the spec's order."""
        self.check(account_id, "join", at, as_known_at, min_position)  # UnknownAccount, bad times
        return self.index.capabilities(account_id, at, as_known_at)

    def history(self, account_id: str) -> list[dict[str, Any]]:
        """The account's events in log order, with both clocks and causes."""
        try:
            account: Account = self.app.repository.get(account_uuid(account_id))
        except AggregateNotFoundError:
            raise UnknownAccount(account_id) from None
        return [f.as_dict() for f in sorted(account.facts, key=lambda f: f.version)]


def _repeated_conflict(
    book: CommandBook,
    app: Application[UUID],
    n: int,
    cmd: Command,
    fingerprint: str,
    group: _Group,
) -> _Outcome | None:
    """The result of an attempt to reuse a command_id already rejected as this very
    attempt, earlier in the group or on file (a duplicate), else None."""
    command_id = cmd.command_id
    assert command_id is not None
    earlier = group.decided.get(conflict_key(command_id, fingerprint))
    if earlier is not None:
        return earlier._replace(n=n, command=cmd.command, duplicate=True)
    known = book.conflict_outcome(app, command_id, fingerprint)
    if known is None:
        return None
    return _Outcome(
        n,
        cmd.command,
        "rejected",
        known.reason,
        command_id,
        True,
        None,
        known.position,
        fingerprint,
    )


def _rejection(position: int, e: Any) -> dict[str, Any]:
    """A rejection as the rejection log shows it."""
    return {
        "position": position,
        "command_id": e.command_id,
        "command": e.command,
        "actor": e.actor,
        "account_id": e.account_id,
        "region": e.region,
        "reason": e.reason,
        "request": e.request,
        "effective_at": iso(e.effective_at),
        "recorded_at": iso(e.recorded_at),
    }


def _who(cmd: Command) -> Who:
    """Who asked for a command, as its events keep it."""
    return {"actor": cmd.actor, "command_id": cmd.command_id}


def _backoff(attempt: int) -> None:
    """Another writer saved first: wait a little (randomly, so two writers part ways)."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))


def open_engine(url: str | None = None) -> Engine:
    """Open the engine on a store URL (None: $ENTITLEMENTS_DB, else ./entitlements.db)."""
    return Engine(url)
