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
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, PersistenceError

from entitlements import commands as c
from entitlements.account import Account, account_uuid
from entitlements.command_book import CommandBook
from entitlements.command_log import AppliedCommand, RejectedCommand, command_uuid
from entitlements.commands import command_fingerprint, now, parse_commands
from entitlements.decisions import CommandResult, Decision, PositionNotReached, UnknownAccount
from entitlements.region import Region, RegionRules, region_id
from entitlements.rules import (
    FREE_HOSTING_RULE,
    NOBODY,
    Fact,
    Rejected,
    Who,
    check_jurisdiction,
    hosting_corrections,
    iso,
)
from entitlements.store import (
    StoreUnavailable,
    WriterLock,
    check_store,
    eventsourcing_env,
    install_clock_guard,
    store_url,
)
from projections.changes import changes_after
from projections.check_index import CheckIndex
from projections.facts import COMMAND_RECORDS, COMMAND_TOPICS, LogFacts
from projections.log_reader import read_log
from projections.projector import SNAPSHOT_EVERY, Projector

FAN_OUT_BATCH = 1000  # events saved per transaction when a region rule fans out
RETRIES = 30  # optimistic-concurrency retries per command, with jittered backoff
LOCK_SPAN = 0.1  # seconds a batch holds the writer lock before letting others in
WRITER_WAIT = (
    300.0  # seconds a command waits for the writer lock (a 1M-account fan-out holds it ~1 min)
)


REJECTION_TOPICS = frozenset({"entitlements:CommandRejected"})


class EntitlementsApplication(Application[UUID]):
    """The event store of account and region aggregates."""

    name = "Entitlements"


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
        if start:
            self.projector.start()

    @property
    def facts(self) -> LogFacts:
        return self.projector.facts

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
                stop = self.facts.position
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
        path = self._book_file()
        loaded = CommandBook.load(path) if path is not None and path.exists() else None
        if loaded is None or loaded[0].position > self.facts.position:
            return None
        book, head = loaded
        try:
            if self.projector.fingerprint(book.position) != head:
                return None
        except ValueError:
            return None
        return book

    def _save_book(self) -> None:
        path, book = self._book_file(), self._book
        if path is None or book is None or book.position - self._book_saved < SNAPSHOT_EVERY:
            return
        with self.projector.lock:
            book.save(path, self.projector.fingerprint(book.position), f".tmp{os.getpid()}")

    def close(self) -> None:
        self.projector.stop()
        self._save_book()
        self.writer.close()
        self.app.close()

    def catch_up(self) -> int:
        """Bring this process's index level with the log; returns events read."""
        return self.projector.catch_up()

    def follow(self, interval: float = 0.05) -> None:
        """Keep the index level with the log in a background thread (LISTEN/NOTIFY on
        PostgreSQL, polling every `interval` s on SQLite)."""
        self.projector.follow(interval)

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

    def apply_parsed(self, numbered: Sequence[tuple[int, Any]]) -> list[CommandResult]:
        """Apply already validated commands, in order; see `apply_iter`."""
        return list(self.apply_iter(numbered))

    def apply_iter(self, numbered: Iterable[tuple[int, Any]]) -> Iterator[CommandResult]:
        """Apply validated commands in order, each in its own transaction with its command
        record, yielding each result once it is committed (so a result shown was applied).
        Runs under the store's writer lock, in spans of at most LOCK_SPAN seconds with a
        catch-up (and any unfinished fan-out finished) at the start of each span, so other
        writers get their turn. The index has caught up when the iteration ends."""
        pending = deque(numbered)
        try:
            while pending:
                with self.writer:
                    self.catch_up()
                    self._finish_fan_outs()
                    span_ends = time.monotonic() + LOCK_SPAN
                    while pending and time.monotonic() < span_ends:
                        n, cmd = pending.popleft()
                        yield self._apply_one(n, cmd)
            self.catch_up()
        except StoreUnavailable:
            raise
        except PersistenceError as e:
            raise StoreUnavailable.from_error(e) from e

    def _apply_one(self, n: int, cmd: Any) -> CommandResult:
        """One command, under the writer lock with the facts level with the log: a command
        already on file gets its original result back; otherwise decide, record, answer."""
        if cmd.command_id is None:  # every command is on file under an id; the caller gave none
            cmd = cmd.model_copy(update={"command_id": f"api:{uuid4().hex}"})
        fingerprint = command_fingerprint(cmd)
        known = self.book.outcome(self.app, cmd.command_id)
        if known is not None:
            if known.fingerprint != fingerprint:
                reason = f"command_id {cmd.command_id} was used for a different command"
                return self._reject(n, cmd, fingerprint, reason, conflict=True)
            return CommandResult(
                n,
                cmd.command,
                known.status,
                known.reason,
                known.position,
                cmd.command_id,
                duplicate=True,
            )
        try:
            position = self._execute(cmd, fingerprint)
        except Rejected as e:
            return self._reject(n, cmd, fingerprint, e.reason)
        return CommandResult(n, cmd.command, "applied", None, position, cmd.command_id)

    def _reject(
        self, n: int, cmd: Any, fingerprint: str, reason: str, conflict: bool = False
    ) -> CommandResult:
        """Record the rejection (the rejection log) and answer it. Its recorded_at is the
        command's, or the store's newest when the command's is earlier (the clock never
        goes back); the command as given keeps what it asked for."""
        newest = self.facts.newest_recorded_at
        stamped = max(t for t in (cmd.recorded_at or now(), newest) if t is not None)
        account_id = getattr(cmd, "account_id", None)
        record = RejectedCommand(
            command_id=cmd.command_id,
            command=cmd.command,
            fingerprint=fingerprint,
            actor=cmd.actor,
            account_id=account_id,
            region=getattr(cmd, "region", None) or self.facts.region_of.get(account_id or ""),
            effective_at=cmd.effective_at,
            recorded_at=stamped,
            reason=reason,
            conflict=conflict,
            request=cmd.model_dump(mode="json", exclude_none=True),
        )
        try:
            position = self._save(record)
        except IntegrityError:  # the id went on file meanwhile (a writer past the lock): a repeat
            return self._apply_one(n, cmd)
        return CommandResult(
            n, cmd.command, "rejected", reason, position or self.facts.position, cmd.command_id
        )

    def _execute(self, cmd: Any, fingerprint: str) -> int:
        """Stamp, decide and save one command with its record; returns the log position its
        events reached. Writers are serialized by the lock; should another writer (or a save
        retried across a server restart) get there first all the same, catch up, stamp and
        decide again."""
        for attempt in range(RETRIES):
            newest = self.facts.newest_recorded_at
            recorded_at = cmd.recorded_at or max(now(), newest or now())
            if newest is not None and recorded_at < newest:
                raise Rejected(
                    f"recorded_at {iso(recorded_at)} is earlier than the newest in the "
                    f"store ({iso(newest)})"
                )
            try:
                if isinstance(cmd, c.RegionCommand):  # type: ignore[arg-type,misc]
                    position = self._execute_region_command(cmd, fingerprint, recorded_at)
                else:
                    position = self._execute_account_command(cmd, fingerprint, recorded_at)
                return position or self.facts.position
            except IntegrityError:
                if attempt == RETRIES - 1:
                    raise
                _backoff(attempt)
                self.catch_up()
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute_account_command(
        self, cmd: Any, fingerprint: str, recorded_at: datetime
    ) -> int | None:
        eff, who = cmd.effective_at, _who(cmd)
        if isinstance(cmd, c.RegisterAccount):
            # A sign-up racing another process's for the same id fails to save (version 1
            # exists), and its retry, after a catch-up, sees the account here.
            check_jurisdiction(cmd.jurisdiction, cmd.region, cmd.account_id)
            if cmd.account_id in self.facts.accounts:
                raise Rejected(f"account {cmd.account_id} already exists")
            region = self._rules(cmd.region)
            account = Account.register(
                cmd.account_id, region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at, who
            )
        else:
            account = self._account(cmd.account_id)
            account.accept_request_from(cmd.jurisdiction)
            region = self._rules(account.region)
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
        account.reconcile_hosting(region, recorded_at, who)
        record = self._applied(cmd, fingerprint, recorded_at, account.account_id, account.region)
        return self._save(account, record)  # the record last: its position is the command's

    def _execute_region_command(
        self, cmd: Any, fingerprint: str, recorded_at: datetime
    ) -> int | None:
        who = _who(cmd)
        region = self._region(cmd.region, cmd.effective_at, recorded_at, who)
        match cmd:
            case c.AuthorizePartner():
                region.authorize_partner(cmd.partner, cmd.effective_at, recorded_at, who)
            case c.ApplyRegionRule():
                region.apply_rule(cmd.rule, cmd.effective_at, recorded_at, who)
            case c.LiftRegionRule():
                region.lift_rule(cmd.rule, cmd.effective_at, recorded_at, who)
        fans_out = getattr(cmd, "rule", None) == FREE_HOSTING_RULE
        record = self._applied(cmd, fingerprint, recorded_at, None, cmd.region, fan_out=fans_out)
        position = self._save(region, record)
        if fans_out:  # the record says a fan-out is due until FanOutCompleted follows it
            position = (
                self._finish_fan_out(cmd.command_id, cmd.region, recorded_at, who) or position
            )
        return position

    @staticmethod
    def _applied(
        cmd: Any,
        fingerprint: str,
        recorded_at: datetime,
        account_id: str | None,
        region: str | None,
        fan_out: bool = False,
    ) -> AppliedCommand:
        return AppliedCommand(
            command_id=cmd.command_id,
            command=cmd.command,
            fingerprint=fingerprint,
            actor=cmd.actor,
            account_id=account_id,
            region=region,
            effective_at=cmd.effective_at,
            recorded_at=recorded_at,
            fan_out=fan_out,
        )

    def _finish_fan_outs(self) -> None:
        """Finish every hosting fan-out that a command recorded but did not complete (its
        process died halfway, or the store failed): called by every writer before its own
        commands, under the writer lock. What is missing is recorded at the store's newest
        recorded_at, as the interrupted fan-out would have recorded it."""
        for command_id, (code, actor) in list(self.book.pending_fan_outs.items()):
            recorded_at = self.facts.newest_recorded_at or now()
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
        then: Any = None,
    ) -> int | None:
        """Record the region's hosting rule on every account of the region that needs it,
        reading accounts from the in-memory facts (no aggregate loads), many accounts per
        transaction; `then` (the command's FanOutCompleted) goes in the last one. Each
        account's events are saved whole or not at all; running it again records only what
        is still missing. Called under the writer lock (held throughout, so the fan-out's
        events keep the rule's recorded_at and the log's clock order)."""
        position = None
        members = list(self.facts.members.get(region.code, ()))
        start, conflicts = 0, 0
        while True:
            events: list[Any] = []
            end = start
            while end < len(members) and len(events) < FAN_OUT_BATCH:
                account_id = members[end]
                events.extend(
                    _event_from_fact(account_id, f, who)
                    for f in hosting_corrections(
                        self.facts.accounts[account_id], region.facts, recorded_at
                    )
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
            before = self.facts.position
            self._finish_fan_outs()
            recorded_at = max(now(), self.facts.newest_recorded_at or now())
            for code in [region] if region else sorted(self.facts.regions):
                self.fan_out(self._rules(code), recorded_at, {"actor": actor})
            self.catch_up()
            return self.facts.position - before

    def _save_events(self, events: list[Any]) -> int | None:
        """Save ready-made events (no aggregate to collect them from) and take them in."""
        if not events:
            return None
        recordings = self.app.events.put(events)
        self.projector.absorb(recordings)
        return recordings[-1].notification.id if recordings else None

    def _save(self, *aggregates: Any) -> int | None:
        events = [e for a in aggregates for e in a.pending_events]
        try:
            recordings = self.app.save(*aggregates)
        except IntegrityError:
            # The server may have gone away just after committing: the recorder retries the
            # insert and hits our own rows. If the log now holds exactly our events, the
            # command was applied; anything else is a real conflict for _execute to retry.
            self.catch_up()
            if events and all(self._on_file(e) for e in events):
                return self.facts.position
            raise
        self.projector.absorb(recordings)
        return recordings[-1].notification.id if recordings else None

    def _on_file(self, event: Any) -> bool:
        """Whether the log (as read so far) holds this very event: same stream, version,
        type and recorded_at. Tells a commit whose acknowledgement was lost from a conflict."""
        if type(event).__name__ in COMMAND_RECORDS:
            return self.book.has_record(self.app, event)
        stream = self.facts.stream_of.get(event.originator_id.int)
        if stream is None:
            return False
        facts = (self.facts.accounts if stream[0] == "account" else self.facts.regions).get(
            stream[1], ()
        )
        return any(
            f.version == event.originator_version
            and f.type == type(event).__name__
            and f.recorded_at == event.recorded_at
            for f in facts
        )

    def _account(self, account_id: str) -> Account:
        try:
            return self.app.repository.get(account_uuid(account_id))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            raise Rejected(f"unknown account {account_id}") from None

    def _rules(self, code: str) -> RegionRules:
        """The region's events as this process has caught up with them (no store read)."""
        return RegionRules(code, tuple(self.facts.region_facts(code)))

    def _region(self, code: str, effective_at: datetime, recorded_at: datetime, who: Who) -> Region:
        """The region's aggregate; a new, unsaved one when the region has no events yet."""
        try:
            return self.app.repository.get(region_id(code))  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return Region(region=code, effective_at=effective_at, recorded_at=recorded_at, **who)

    # -- the change feed -----------------------------------------------------------------

    def changes(
        self, after: int = 0, limit: int = 100, wait: float = 0.0
    ) -> tuple[list[dict[str, Any]], int]:
        """Capability changes recorded after log position `after`, in log order, and the
        position to ask from next (see projections/changes.py). With nothing new, wait up
        to `wait` seconds for the log to move on (long polling)."""
        feed = self.projector.start_feed()
        self.catch_up()

        def read(after: int) -> tuple[list[dict[str, Any]], int]:
            # From the feed kept in memory; the full log only for positions before it.
            return feed.read(after, limit) or changes_after(self.app, after, limit)

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


def _who(cmd: Any) -> Who:
    """Who asked for a command, as its events keep it."""
    return {"actor": cmd.actor, "command_id": cmd.command_id}


def _event_from_fact(account_id: str, fact: Fact, who: Who) -> Any:
    """The account event a rule-caused correction is recorded as."""
    cls = getattr(Account, fact.type)  # HostingRevoked or HostingRestored, made by @event
    return cls(  # type: ignore[call-arg]
        originator_id=account_uuid(account_id),
        originator_version=fact.version,
        timestamp=cls.create_timestamp(),
        reason=fact.data["reason"],
        effective_at=fact.effective_at,
        recorded_at=fact.recorded_at,
        cause=dict(fact.cause or {}),
        actor=who.get("actor"),
        command_id=who.get("command_id"),
    )


def _backoff(attempt: int) -> None:
    """Another writer saved first: wait a little (randomly, so two writers part ways)."""
    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))


def open_engine(url: str | None = None) -> Engine:
    """Open the engine on a store URL (None: $ENTITLEMENTS_DB, else ./entitlements.db)."""
    return Engine(url)
