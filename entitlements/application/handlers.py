"""Deciding one command into its group: a command already on file gets its original result
back; otherwise the command is stamped, decided on its aggregates (or rejected), and its
events and its record (applied or rejected) join the group's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import assert_never
from uuid import UUID, uuid4

from eventsourcing.domain import DomainEventProtocol

from entitlements.application.aggregates import Aggregates
from entitlements.application.command_book import CommandBook
from entitlements.application.command_book_file import CommandBooks
from entitlements.application.group import Group, Outcome
from entitlements.application.store_app import EntitlementsApplication
from entitlements.domain import commands as c
from entitlements.domain.account import Account
from entitlements.domain.command_log import applied_record, conflict_key, rejected_record
from entitlements.domain.commands import Command, command_fingerprint
from entitlements.domain.rules import (
    FREE_HOSTING_RULE,
    Rejected,
    Who,
    check_jurisdiction,
)
from entitlements.domain.times import iso, now
from projections.projector import Projector


@dataclass
class Handlers:
    """Decides commands on the aggregates, against the log and what the group decided."""

    app: EntitlementsApplication
    projector: Projector
    aggregates: Aggregates
    books: CommandBooks

    @property
    def book(self) -> CommandBook:
        return self.books.book

    def decide(self, n: int, cmd: Command, group: Group) -> None:
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
                Outcome.on_file(
                    n,
                    cmd.command,
                    command_id,
                    fingerprint,
                    known.status,
                    known.reason,
                    known.position,
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
        group.decided[command_id] = group.decided_now(n, cmd.command, None, command_id, fingerprint)

    def _conflict(
        self, n: int, cmd: Command, command_id: str, fingerprint: str, group: Group
    ) -> None:
        """`command_id` was used for another command: rejected, and recorded once per
        attempt (this fingerprint); a repeat of a recorded attempt is its duplicate."""
        repeat = self._repeated_conflict(n, cmd, fingerprint, group)
        if repeat is not None:
            group.outcomes.append(repeat)
            return
        reason = f"command_id {command_id} was used for a different command"
        self._reject(n, cmd, command_id, fingerprint, reason, group, conflict=True)
        group.decided[conflict_key(command_id, fingerprint)] = group.outcomes[-1]

    def _repeated_conflict(
        self, n: int, cmd: Command, fingerprint: str, group: Group
    ) -> Outcome | None:
        """The result of an attempt to reuse a command_id already rejected as this very
        attempt, earlier in the group or on file (a duplicate), else None."""
        command_id = cmd.command_id
        assert command_id is not None
        earlier = group.decided.get(conflict_key(command_id, fingerprint))
        if earlier is not None:
            return earlier._replace(n=n, command=cmd.command, duplicate=True)
        known = self.book.conflict_outcome(self.app, command_id, fingerprint)
        if known is None:
            return None
        return Outcome.on_file(
            n, cmd.command, command_id, fingerprint, "rejected", known.reason, known.position
        )

    def _reject(
        self,
        n: int,
        cmd: Command,
        command_id: str,
        fingerprint: str,
        reason: str,
        group: Group,
        conflict: bool = False,
    ) -> None:
        """Record the rejection (the rejection log) in the group. Its recorded_at is the
        command's, or the store's newest when the command's is earlier (the clock never
        goes back); the command as given keeps what it asked for."""
        newest = group.newest or self.projector.log.newest_recorded_at
        stamped = max(t for t in (cmd.recorded_at or now(), newest) if t is not None)
        account_id: str | None = getattr(cmd, "account_id", None)
        record = rejected_record(
            command_id=command_id,
            command=cmd.command,
            fingerprint=fingerprint,
            actor=cmd.actor,
            account_id=account_id,
            region=getattr(cmd, "region", None) or self.aggregates.region_of(account_id, group),
            effective_at=cmd.effective_at,
            recorded_at=stamped,
            reason=reason,
            conflict=conflict,
            request=cmd.model_dump(mode="json", exclude_none=True),
        )
        group.add(stamped, record)
        outcome = group.decided_now(n, cmd.command, reason, command_id, fingerprint)
        if not conflict:  # a conflicting id stays with the command that used it first
            group.decided[command_id] = outcome

    def _execute(self, cmd: Command, command_id: str, fingerprint: str, group: Group) -> None:
        """Stamp and decide one command, against the facts and what the group decided
        before it; its events and its record join the group's."""
        newest = group.newest or self.projector.log.newest_recorded_at
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
        group: Group,
    ) -> None:
        eff, who = cmd.effective_at, _who(cmd)
        if isinstance(cmd, c.RegisterAccount):
            # A sign-up racing another process's for the same id fails to save (version 1
            # exists), and its retry, after a catch-up, sees the account here.
            check_jurisdiction(cmd.jurisdiction, cmd.region, cmd.account_id)
            if self.projector.log.has_account(cmd.account_id) or cmd.account_id in group.accounts:
                raise Rejected(f"account {cmd.account_id} already exists")
            region = self.aggregates.rules(cmd.region, group)
            account = Account.register(
                cmd.account_id, region, cmd.plan, cmd.channel, cmd.partner, eff, recorded_at, who
            )
        else:
            account = self.aggregates.account(cmd.account_id, group)
            account.accept_request_from(cmd.jurisdiction)
            region = self.aggregates.rules(account.region, group)
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
                case c.ChooseDataRegions():
                    chosen = [self.aggregates.rules(r, group) for r in cmd.regions]
                    account.choose_data_regions(chosen, eff, recorded_at, who)
                case _:
                    assert_never(cmd)
        account.reconcile_hosting(region, recorded_at, who)
        record = _applied(
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
        group: Group,
    ) -> None:
        who = _who(cmd)
        region = self.aggregates.region(cmd.region, cmd.effective_at, recorded_at, who, group)
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
        record = _applied(
            cmd, command_id, fingerprint, recorded_at, None, cmd.region, fan_out=fans_out
        )
        group.regions[cmd.region] = region
        group.add(recorded_at, record, region)
        if fans_out:  # the record says a fan-out is due until FanOutCompleted follows it
            group.fan_out = (command_id, cmd.region, recorded_at, who)


def _applied(
    cmd: Command,
    command_id: str,
    fingerprint: str,
    recorded_at: datetime,
    account_id: str | None,
    region: str | None,
    fan_out: bool = False,
) -> DomainEventProtocol[UUID]:
    """The command's record: applied, with what it asked and where."""
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


def _who(cmd: Command) -> Who:
    """Who asked for a command, as its events keep it."""
    return {"actor": cmd.actor, "command_id": cmd.command_id}
