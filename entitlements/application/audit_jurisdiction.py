"""The jurisdiction promise, shown from the log: no command requested under a region's
jurisdiction changed an account outside it (`entitlements.application.audit.jurisdiction`). The
applied-command records of old lack the jurisdiction; `prove_jurisdiction` finds it by the
command's fingerprint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args
from uuid import UUID

from pydantic import BaseModel, ValidationError

from entitlements.application.audit_log import (
    AuditLog,
    check_region_code,
)
from entitlements.application.engine import Engine
from entitlements.domain.commands import Command, command_fingerprint
from entitlements.domain.event_facts import fact_from_event
from entitlements.domain.events import (
    ACCOUNT_REGISTERED,
    ACCOUNT_REINSTATED,
    ACCOUNT_SUSPENDED,
    COMMAND_APPLIED,
    COMMAND_REJECTED,
    DATA_REGIONS_CHOSEN,
    HOSTING_RESTORED,
    HOSTING_REVOKED,
    MOVED_TO_PARTNER,
    REGISTRATION_APPROVED,
    SUBSCRIPTION_CLOSED,
    SUBSCRIPTION_OPENED,
    name_of,
)
from entitlements.domain.times import iso

# -- the jurisdiction promise ---------------------------------------------------------------

#: The account event each applied account command records itself (not caused by a rule),
#: and the fields of the command it carries.
_OWN_EVENT: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "register_account": (ACCOUNT_REGISTERED, ("region", "plan", "channel", "partner")),
    "approve_registration": (REGISTRATION_APPROVED, ("plan", "channel", "partner")),
    "open_subscription": (SUBSCRIPTION_OPENED, ("plan", "channel", "partner")),
    "close_subscription": (SUBSCRIPTION_CLOSED, ("reason",)),
    "revoke_hosting": (HOSTING_REVOKED, ("reason",)),
    "restore_hosting": (HOSTING_RESTORED, ("reason",)),
    "move_to_partner": (MOVED_TO_PARTNER, ("partner",)),
    "suspend_account": (ACCOUNT_SUSPENDED, ("jurisdiction", "reason")),
    "reinstate_account": (ACCOUNT_REINSTATED, ("reason",)),
    "choose_data_regions": (DATA_REGIONS_CHOSEN, ("regions",)),
}
_MODELS: Mapping[str, type[BaseModel]] = {
    get_args(m.model_fields["command"].annotation)[0]: m for m in get_args(Command)
}
_ALL_CODES = tuple(chr(a) + chr(b) for a in range(65, 91) for b in range(65, 91))


@dataclass
class _Change:
    """An account event in the log: where, on which account, what, and which command (its
    Fact's fields, as domain.event_facts reads an event: `data` without the envelope)."""

    position: int
    account_id: str
    version: int
    type: str
    command_id: str | None
    cause: Mapping[str, Any] | None
    data: Mapping[str, Any]


@dataclass
class _Walked:
    """What the jurisdiction audit needs from one walk of the log."""

    accounts: dict[UUID, tuple[str, str]] = field(default_factory=dict)  # id -> (account, region)
    applied: dict[str, tuple[int, Any]] = field(default_factory=dict)  # command_id -> record
    rejected: list[tuple[int, Any]] = field(default_factory=list)
    changes: list[_Change] = field(default_factory=list)
    head: int = 0


def _walk_commands(engine: Engine) -> _Walked:
    log = AuditLog(engine)
    w = _Walked()
    w.head = engine.position()
    for n in log.notifications(w.head):
        kind = name_of(n.topic)
        if kind == COMMAND_APPLIED:
            e = log.decode(n)
            w.applied.setdefault(e.command_id, (n.id, e))
        elif kind == COMMAND_REJECTED:
            w.rejected.append((n.id, log.decode(n)))
        elif n.originator_id in w.accounts or kind == ACCOUNT_REGISTERED:
            e = log.decode(n)
            if kind == ACCOUNT_REGISTERED:
                w.accounts[n.originator_id] = (e.account_id, e.region)
            account_id = w.accounts[n.originator_id][0]
            f = fact_from_event(f"account:{account_id}", e)
            w.changes.append(
                _Change(
                    n.id, account_id, f.version, f.type, f.data.get("command_id"), f.cause, f.data
                )
            )
    return w


def prove_jurisdiction(record: Any, own: _Change | None, extra: Sequence[str] = ()) -> Any:
    """The jurisdiction an applied account command was given, proved from the log: the
    record keeps the SHA-256 fingerprint of the command as given, and the event the command
    recorded keeps every other field; rebuilding the command with each possible jurisdiction
    (none, `platform`, every two-letter code) finds the one whose fingerprint matches.
    Returns the jurisdiction (None: none given), or `UNPROVEN` when no candidate matches.
    A record made since the jurisdiction is kept on it names it, and no search is needed."""
    if "jurisdiction" in vars(record):
        return record.jurisdiction
    model = _MODELS.get(record.command)
    spec = _OWN_EVENT.get(record.command)
    if model is None or spec is None or own is None:
        return UNPROVEN
    fields = {name: own.data.get(name) for name in spec[1] if own.data.get(name) is not None}
    base = {
        "command": record.command,
        "account_id": record.account_id,
        "effective_at": record.effective_at,
        **({"actor": record.actor} if record.actor is not None else {}),
        **fields,
    }
    if "jurisdiction" not in base:
        base["jurisdiction"] = "platform"  # a placeholder the candidates replace
    try:
        cmd = model.model_validate(base)
    except ValidationError:
        return UNPROVEN
    first = [None, "platform", own.data.get("jurisdiction"), *extra]
    candidates = dict.fromkeys([*first, *_ALL_CODES])
    for recorded_at in (None, record.recorded_at):
        for j in candidates:
            update = {"jurisdiction": j, "recorded_at": recorded_at}
            if command_fingerprint(cmd.model_copy(update=update)) == record.fingerprint:
                return j
    return UNPROVEN


class _Unproven:
    def __repr__(self) -> str:
        return "UNPROVEN"


UNPROVEN: Any = _Unproven()


def _touched(changes: list[_Change], region_of: Mapping[str, str]) -> list[dict[str, Any]]:
    """The accounts a command's events changed, each with its region and those events."""
    out: dict[str, dict[str, Any]] = {}
    for c in changes:
        a = out.setdefault(
            c.account_id,
            {"account_id": c.account_id, "region": region_of[c.account_id], "events": []},
        )
        a["events"].append({"type": c.type, "version": c.version, "position": c.position})
    return list(out.values())


def _own_change(rec: Any, changes: list[_Change]) -> _Change | None:
    """The event an applied account command recorded itself (not one a rule caused): the
    fingerprint proof rebuilds the command from it."""
    spec = _OWN_EVENT.get(rec.command)
    return next(
        (
            c
            for c in changes
            if c.account_id == rec.account_id and spec and c.type == spec[0] and not c.cause
        ),
        None,
    )


def _proof_of(rec: Any) -> str:
    """How a proved jurisdiction was found, in the auditors' words."""
    if "jurisdiction" in vars(rec):
        return "kept on the command's record"
    if rec.command == "suspend_account":
        return "recorded on AccountSuspended, and the fingerprint matches"
    return "fingerprint of the command as given"


@dataclass
class _Findings:
    """The jurisdiction audit of one region over one walk of the log: one method per kind
    of finding, so each rule of the promise reads on its own."""

    region: str
    w: _Walked
    region_of: dict[str, str] = field(default_factory=dict)
    by_command: dict[str, list[_Change]] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    rule_commands: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    unproven: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.region_of = {a: r for a, r in self.w.accounts.values()}
        for c in self.w.changes:
            if c.command_id is not None:
                self.by_command.setdefault(c.command_id, []).append(c)
        self.codes = sorted({r for _, r in self.w.accounts.values()} | {self.region})

    def applied(self, command_id: str, position: int, rec: Any) -> None:
        """An applied command: a region command's rule, or an account command whose
        jurisdiction is proved; either way, the accounts it changed outside the region."""
        changes = self.by_command.get(command_id, [])
        item = {
            "position": position,
            "command_id": command_id,
            "command": rec.command,
            "actor": rec.actor,
            "effective_at": iso(rec.effective_at),
            "recorded_at": iso(rec.recorded_at),
            "accounts": _touched(changes, self.region_of),
        }
        outside = [a for a in item["accounts"] if a["region"] != self.region]
        if rec.account_id is None:  # a region command: its rule reaches its own region only
            if rec.region == self.region:
                self._rule_command(item, outside)
            return
        j = prove_jurisdiction(rec, _own_change(rec, changes), self.codes)
        if j is UNPROVEN:
            self._unproven(item, outside)
        elif j == self.region:
            item["jurisdiction"], item["proof"] = j, _proof_of(rec)
            self._under_region(item, outside)

    def _rule_command(self, item: dict[str, Any], outside: list[dict[str, Any]]) -> None:
        self.rule_commands.append(item)
        self._changed_outside(item, outside, f"a rule of {self.region} reached")

    def _unproven(self, item: dict[str, Any], outside: list[dict[str, Any]]) -> None:
        """No candidate matches the fingerprint: harmless inside the region, a violation
        once it changed an account outside it (the promise is not shown)."""
        item["jurisdiction"], item["proof"] = None, "unproven: no candidate matches"
        if outside:
            self.unproven.append(item)
            self.violations.append(
                {
                    **item,
                    "violation": "jurisdiction unproven, and it changed an account "
                    f"outside {self.region}: " + ", ".join(a["account_id"] for a in outside),
                }
            )

    def _under_region(self, item: dict[str, Any], outside: list[dict[str, Any]]) -> None:
        self.commands.append(item)
        self._changed_outside(item, outside, f"under {self.region}'s jurisdiction it changed")

    def _changed_outside(
        self, item: dict[str, Any], outside: list[dict[str, Any]], how: str
    ) -> None:
        """A violation for each account outside the region the command changed: `how` it
        changed it, then the account and its region."""
        self.violations.extend(
            {**item, "violation": f"{how} {a['account_id']} in {a['region']}"} for a in outside
        )

    def rule_causes(self) -> None:
        """Rule-caused events of the region's rules, however recorded (a reconcile has no
        command), on accounts outside the region."""
        for c in self.w.changes:
            if (
                c.cause
                and c.cause.get("region") == self.region
                and self.region_of[c.account_id] != self.region
            ):
                self.violations.append(
                    {
                        "position": c.position,
                        "command_id": c.command_id,
                        "violation": f"{c.type} v{c.version} on {c.account_id} in "
                        f"{self.region_of[c.account_id]} names a rule of {self.region} "
                        "as its cause",
                    }
                )

    def rejected_attempt(self, position: int, rec: Any) -> None:
        """A rejected command asked under the region's jurisdiction; if events name it
        (and it was not applied after all), it changed accounts anyway: a violation."""
        request = getattr(rec, "request", None) or {}  # records older than `request`
        if request.get("jurisdiction") != self.region:
            return
        self.rejected.append(
            {
                "position": position,
                "command_id": rec.command_id,
                "command": rec.command,
                "actor": rec.actor,
                "account_id": rec.account_id,
                "account_region": rec.region,
                "effective_at": iso(rec.effective_at),
                "recorded_at": iso(rec.recorded_at),
                "reason": rec.reason,
            }
        )
        stray = [
            c
            for c in self.by_command.get(rec.command_id, [])
            if not getattr(rec, "conflict", False)
        ]
        if stray and rec.command_id not in self.w.applied:
            self.violations.append(
                {
                    "position": position,
                    "command_id": rec.command_id,
                    "violation": "a rejected command under "
                    f"{self.region}'s jurisdiction changed "
                    + ", ".join(sorted({c.account_id for c in stray})),
                }
            )

    def unattributed(self) -> list[str]:
        """Command ids on account events that no applied or rejected record names."""
        known = {*self.w.applied, *(r.command_id for _, r in self.w.rejected)}
        return sorted(
            {c.command_id for c in self.w.changes if c.command_id and c.command_id not in known}
        )

    def report(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "holds": not self.violations,
            "head": {"position": self.w.head},
            "commands": self.commands,
            "rule_commands": self.rule_commands,
            "rejected": self.rejected,
            "violations": self.violations,
            "unproven": self.unproven,
            "unattributed_command_ids": self.unattributed(),
            "method": (
                "CommandApplied records keep no jurisdiction; each applied account command's "
                "jurisdiction is proved by rebuilding the command from its record and the "
                "event it recorded and matching the record's SHA-256 fingerprint over every "
                "possible jurisdiction. Accounts changed: every account event carrying the "
                "command_id."
            ),
        }


def jurisdiction(engine: Engine, region: str) -> dict[str, Any]:
    """Shown from the log: no command requested under `region`'s jurisdiction changed an
    account outside `region`. Lists those commands with the accounts they changed (and
    their regions), the region's own rule commands with the accounts they reached, every
    rejected attempt under the jurisdiction, and each violation found (`holds` is False
    then). The applied-command record does not keep the jurisdiction: it is proved per
    command by its fingerprint (see `prove_jurisdiction`); one that cannot be proved and
    changed an account outside the region counts as a violation (the promise is not shown)."""
    found = _Findings(check_region_code(region), _walk_commands(engine))
    for command_id, (position, rec) in found.w.applied.items():
        found.applied(command_id, position, rec)
    found.rule_causes()
    for position, rec in found.w.rejected:
        found.rejected_attempt(position, rec)
    return found.report()
