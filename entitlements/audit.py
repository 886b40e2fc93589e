"""The auditors' door: read-only questions answered from the log itself.

    explain(engine, "cn-free-01", "host", at="2020-05-19")   # the decision, how long it holds, why
    history(engine, "cn-free-01", as_known_at="2020-06-01")  # events and rejections known by K
    jurisdiction(engine, "CN")                               # CN's requests never left CN
    export_case(engine, account_id="cn-free-01")             # a case file (JSON or CSV)
    bitemporal(engine, "cn-ent-02", "host")                  # its answers over both clocks

Everything here reads what is on file: the engine's public API (check, history, rejections,
position), the aggregates loaded through `engine.app.repository`, and the log's own
notifications (`engine.app.recorder`, `engine.app.mapper`: the event-sourcing library's API)
for positions and command records. The rules are the domain's (`rules.fold_account`,
`fold_region`, `decide`); no projection is consulted, so an audit does not trust the very
read models it may be checking. Each question walks the log once: fine for an auditor, not
for the hot path.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, get_args
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from pydantic import BaseModel, ValidationError

from entitlements import integrity
from entitlements.account import Account, account_uuid
from entitlements.bitemporal import Rectangle, rectangles
from entitlements.commands import Command, command_fingerprint, now, parse_time
from entitlements.decisions import UnknownAccount
from entitlements.engine import Engine
from entitlements.region import Region, region_id
from entitlements.rules import (
    CAPABILITIES,
    Fact,
    UnknownCapability,
    Verdict,
    decide,
    fold_account,
    fold_region,
    iso,
)

PAGE = 1000  # notifications per select while walking the log
TOPIC = "entitlements:"
APPLIED, REJECTED = "CommandApplied", "CommandRejected"
RULE_SWITCHES = ("RegionRuleApplied", "RegionRuleLifted")
_TINY = timedelta(microseconds=1)
_DATA_SKIP = {"originator_id", "originator_version", "originator_topic", "timestamp", "chain"}


# -- small helpers --------------------------------------------------------------------------


def parse_when(field_name: str, value: datetime | str | None) -> datetime | None:
    """A time the caller gave, as aware UTC; a bad one is a ValueError naming the field."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise ValueError(f"{field_name}: {e}") from None


def check_region_code(code: str) -> str:
    """A region code as DOMAIN.md has them (two upper-case letters), else a ValueError."""
    if len(code) != 2 or not code.isascii() or not code.isalpha() or not code.isupper():
        raise ValueError(f"region: {code[:40]!r} is not a region code (two upper-case letters)")
    return code


def log_head(engine: Engine) -> tuple[int, str | None]:
    """The log's head: its position and the integrity chain's hash there, as stored (one
    row read; `verify` is what checks it)."""
    position = engine.position()
    return position, integrity.stored_hash(engine.app, position)


def _decode(engine: Engine, notification: Any) -> Any:
    """A stored event as its domain event (fields read by name: the log's own shape)."""
    event: Any = engine.app.mapper.to_domain_event(notification)
    return event


def _type_of(topic: str) -> str:
    return topic.removeprefix(TOPIC).rsplit(".", 1)[-1]


def _walk(engine: Engine, stop: int | None = None) -> Iterator[Any]:
    """The log's notifications in order (position = `n.id`), up to `stop`."""
    start = 1
    while stop is None or start <= stop:
        page = engine.app.recorder.select_notifications(start=start, limit=PAGE, stop=stop)
        yield from page
        if len(page) < PAGE:
            return
        start = page[-1].id + 1


def _load_account(engine: Engine, account_id: str, version: int | None = None) -> Account:
    try:
        account: Account = engine.app.repository.get(account_uuid(account_id), version=version)
    except AggregateNotFoundError:
        raise UnknownAccount(account_id) from None
    return account


def _region_facts(engine: Engine, code: str, version: int | None = None) -> list[Fact]:
    """A region's facts in effective order; none when the region has no event."""
    try:
        region: Region = engine.app.repository.get(region_id(code), version=version)
    except AggregateNotFoundError:
        return []
    return list(region.facts)


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


# -- explain: the decision, how long it holds, and the chain behind it ----------------------


def _verdict(
    capability: str,
    account_facts: Sequence[Fact],
    code: str,
    region_facts: Sequence[Fact],
    at: datetime,
    known: datetime | None,
) -> Verdict:
    return decide(
        capability,
        fold_account(account_facts, at, known),
        fold_region(code, region_facts, at, known),
    )


def _same(a: Verdict, b: Verdict) -> bool:
    return (a.allowed, a.value, a.reason) == (b.allowed, b.value, b.reason)


def holds(
    capability: str,
    account_facts: Sequence[Fact],
    code: str,
    region_facts: Sequence[Fact],
    at: datetime,
    known: datetime | None,
) -> tuple[datetime | None, datetime | None]:
    """The effective interval [since, until) around `at` over which decide() gives the same
    allowed, value and reason, as known at `known` (None: an open end). The answer can only
    change where a known event takes effect, so those times are the only candidates."""
    times = sorted(
        {
            f.effective_at
            for f in (*account_facts, *region_facts)
            if known is None or f.recorded_at <= known
        }
    )
    here = _verdict(capability, account_facts, code, region_facts, at, known)
    since: datetime | None = None
    for t in reversed([t for t in times if t <= at]):
        before = _verdict(capability, account_facts, code, region_facts, t - _TINY, known)
        if not _same(before, here):
            since = t
            break
    until: datetime | None = None
    for t in (t for t in times if t > at):
        if not _same(_verdict(capability, account_facts, code, region_facts, t, known), here):
            until = t
            break
    return since, until


def _who_and_clocks(f: Fact) -> dict[str, Any]:
    return {
        "stream": f.stream,
        "type": f.type,
        "version": f.version,
        "effective_at": iso(f.effective_at),
        "recorded_at": iso(f.recorded_at),
        "actor": f.data.get("actor"),
        "command_id": f.data.get("command_id"),
    }


def _find(facts: Sequence[Fact], ref: Mapping[str, Any] | None) -> Fact | None:
    if not ref:
        return None
    return next(
        (f for f in facts if f.version == ref.get("version") and f.type == ref.get("type")), None
    )


def explain(
    engine: Engine,
    account_id: str,
    capability: str,
    at: datetime | str | None = None,
    as_known_at: datetime | str | None = None,
) -> dict[str, Any]:
    """What `check` answers at (T, K), since and until when that holds in effective time
    (as known at K), and the chain behind it: each deciding event with both clocks and who
    asked, and for a rule-caused one the region rule and the region event that switched it.
    The decision is `engine.check`'s own; `check_agrees` says the domain fold gives it too."""
    t = parse_when("at", at) or now()
    k = parse_when("as_known_at", as_known_at)
    if capability not in CAPABILITIES:
        engine.check(account_id, "join")  # an unknown account first, as `check` does
        raise UnknownCapability(capability)
    d = engine.check(account_id, capability, t, k)
    account = _load_account(engine, account_id)
    code = account.region
    region_facts = _region_facts(engine, code)
    mine = _verdict(capability, account.facts, code, region_facts, t, k)
    since, until = holds(capability, account.facts, code, region_facts, t, k)
    regions: dict[str, list[Fact]] = {code: region_facts}
    chain = []
    for f in d.because:
        link: dict[str, Any] = {**_who_and_clocks(f), "cause": dict(f.cause) if f.cause else None}
        cause = f.cause or {}
        if cause.get("rule"):
            where = str(cause.get("region", code))
            if where not in regions:
                regions[where] = _region_facts(engine, where)
            rule_event = _find(regions[where], cause.get("rule_event"))
            link["rule"] = {
                "rule": cause["rule"],
                "region": where,
                "event": _who_and_clocks(rule_event) if rule_event else None,
            }
            trigger_ref = cause.get("trigger")
            if trigger_ref:
                pool = (
                    account.facts
                    if str(trigger_ref.get("stream", "")).startswith("account:")
                    else regions[where]
                )
                trigger = _find(pool, trigger_ref)
                link["rule"]["trigger"] = _who_and_clocks(trigger) if trigger else trigger_ref
        chain.append(link)
    return {
        "account_id": account_id,
        "capability": capability,
        "region": code,
        "at": iso(t),
        "as_known_at": iso(k) if k else None,
        "allowed": d.allowed,
        "value": d.value,
        "reason": d.reason,
        "holds": {"since": iso(since) if since else None, "until": iso(until) if until else None},
        "because": chain,
        "position": d.position,
        "check_agrees": _same(mine, Verdict(d.allowed, d.value, d.reason, ())),
    }


def bitemporal(engine: Engine, account_id: str, capability: str) -> list[Rectangle]:
    """The rectangles of the (effective, recorded) plane over which the account's answer
    for the capability stays the same, from its events and its region's on file (see
    entitlements/bitemporal.py); `explain --png` draws them."""
    if capability not in CAPABILITIES:
        engine.check(account_id, "join")  # an unknown account first, as `check` does
        raise UnknownCapability(capability)
    account = _load_account(engine, account_id)
    return rectangles(
        capability, account.facts, account.region, _region_facts(engine, account.region)
    )


# -- history as known at K, with the rejections beside the events ---------------------------


def _positions(engine: Engine, uuids: set[UUID], stop: int | None = None) -> dict[Any, int]:
    """(aggregate id, version) -> log position, for the given aggregates' events."""
    found: dict[Any, int] = {}
    for n in _walk(engine, stop):
        if n.originator_id in uuids:
            found[(n.originator_id, n.originator_version)] = n.id
    return found


def history(
    engine: Engine,
    account_id: str,
    as_known_at: datetime | str | None = None,
    rejections: bool = True,
) -> list[dict[str, Any]]:
    """The account's events recorded by K (all, without K) and, with `rejections`, its
    rejected commands recorded by K, in log order; `kind` says which is which."""
    k = parse_when("as_known_at", as_known_at)
    account = _load_account(engine, account_id)
    uid = account_uuid(account_id)
    positions = _positions(engine, {uid})
    entries = [
        {"kind": "event", **event_view(f, positions.get((uid, f.version)))}
        for f in account.facts
        if k is None or f.recorded_at <= k
    ]
    if rejections:
        for r in engine.rejections(account_id=account_id):
            if k is None or parse_time(r["recorded_at"]) <= k:
                entries.append({"kind": "rejection", **r})
    entries.sort(key=lambda e: (e.get("position") or 0, e.get("version") or 0))
    return entries


# -- the jurisdiction promise ---------------------------------------------------------------

#: The account event each applied account command records itself (not caused by a rule),
#: and the fields of the command it carries.
_OWN_EVENT: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "register_account": ("AccountRegistered", ("region", "plan", "channel", "partner")),
    "approve_registration": ("RegistrationApproved", ("plan", "channel", "partner")),
    "open_subscription": ("SubscriptionOpened", ("plan", "channel", "partner")),
    "close_subscription": ("SubscriptionClosed", ("reason",)),
    "revoke_hosting": ("HostingRevoked", ("reason",)),
    "restore_hosting": ("HostingRestored", ("reason",)),
    "move_to_partner": ("MovedToPartner", ("partner",)),
    "suspend_account": ("AccountSuspended", ("jurisdiction", "reason")),
    "reinstate_account": ("AccountReinstated", ("reason",)),
}
_MODELS: Mapping[str, type[BaseModel]] = {
    get_args(m.model_fields["command"].annotation)[0]: m for m in get_args(Command)
}
_ALL_CODES = tuple(chr(a) + chr(b) for a in range(65, 91) for b in range(65, 91))


@dataclass
class _Change:
    """An account event in the log: where, on which account, what, and which command."""

    position: int
    account_id: str
    version: int
    type: str
    command_id: str | None
    cause: Mapping[str, Any] | None
    data: dict[str, Any]


@dataclass
class _Walked:
    """What the jurisdiction audit needs from one walk of the log."""

    accounts: dict[UUID, tuple[str, str]] = field(default_factory=dict)  # id -> (account, region)
    applied: dict[str, tuple[int, Any]] = field(default_factory=dict)  # command_id -> record
    rejected: list[tuple[int, Any]] = field(default_factory=list)
    changes: list[_Change] = field(default_factory=list)
    head: int = 0


def _walk_commands(engine: Engine) -> _Walked:
    w = _Walked()
    w.head = engine.position()
    for n in _walk(engine, w.head):
        kind = _type_of(n.topic)
        if kind == APPLIED:
            e = _decode(engine, n)
            w.applied.setdefault(e.command_id, (n.id, e))
        elif kind == REJECTED:
            w.rejected.append((n.id, _decode(engine, n)))
        elif n.originator_id in w.accounts or kind == "AccountRegistered":
            e = _decode(engine, n)
            if kind == "AccountRegistered":
                w.accounts[n.originator_id] = (e.account_id, e.region)
            data = {k: v for k, v in vars(e).items() if k not in _DATA_SKIP}
            w.changes.append(
                _Change(
                    n.id,
                    w.accounts[n.originator_id][0],
                    n.originator_version,
                    kind,
                    data.pop("command_id", None),
                    data.pop("cause", None),
                    data,
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
        for a in outside:
            self.violations.append(
                {
                    **item,
                    "violation": f"a rule of {self.region} reached {a['account_id']} "
                    f"in {a['region']}",
                }
            )

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
        for a in outside:
            self.violations.append(
                {
                    **item,
                    "violation": f"under {self.region}'s jurisdiction it changed "
                    f"{a['account_id']} in {a['region']}",
                }
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


# -- the case file --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """A case file's [from, to], either end open."""

    start: datetime | None
    end: datetime | None

    @classmethod
    def given(cls, from_: datetime | str | None, to: datetime | str | None) -> _Window:
        """The window the caller gave; a bad time or an empty window is a ValueError."""
        start, end = parse_when("from", from_), parse_when("to", to)
        if start and end and end < start:
            raise ValueError("to: earlier than from")
        return cls(start, end)

    def __contains__(self, t: datetime) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t <= self.end)


def _case_accounts(
    engine: Engine, account_id: str | None, region: str | None, head: int
) -> tuple[str, dict[UUID, str]]:
    """The case's region and its accounts (aggregate id -> account id): the one account,
    or every account registered in the region up to `head`."""
    if account_id is not None:
        return _load_account(engine, account_id).region, {account_uuid(account_id): account_id}
    code = check_region_code(region or "")
    accounts: dict[UUID, str] = {}
    for n in _walk(engine, head):
        if _type_of(n.topic) == "AccountRegistered":
            e = _decode(engine, n)
            if e.region == code:
                accounts[n.originator_id] = e.account_id
    if not accounts and not _region_facts(engine, code):
        raise ValueError(f"region: no account and no event of region {code} on file")
    return code, accounts


def _decisions_at(engine: Engine, name: str, points: set[datetime]) -> list[dict[str, Any]]:
    """Every capability's decision for `name` at each point, as `check` answers."""
    decisions: list[dict[str, Any]] = []
    for t in sorted(points):
        for cap in CAPABILITIES:
            d = engine.check(name, cap, t)
            decisions.append(
                {
                    "account_id": name,
                    "at": iso(t),
                    "capability": cap,
                    "allowed": d.allowed,
                    "value": d.value,
                    "reason": d.reason,
                    "because": [f.ref() for f in d.because],
                    "position": d.position,
                }
            )
    return decisions


def _case_events_and_decisions(
    engine: Engine, code: str, accounts: Mapping[UUID, str], window: _Window, head: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The case's events in the window (the region's and its accounts', as of `head`, in log
    order) and each account's decisions at the window's start and at every change point."""
    rid = region_id(code)
    positions = _positions(engine, set(accounts) | {rid}, head)
    newest: dict[UUID, int] = {}
    for uid, version in positions:
        newest[uid] = max(newest.get(uid, 0), version)
    region_facts = _region_facts(engine, code, newest[rid]) if rid in newest else []
    events = [
        event_view(f, positions.get((rid, f.version)))
        for f in region_facts
        if f.effective_at in window
    ]
    decisions: list[dict[str, Any]] = []
    for uid, name in sorted(accounts.items(), key=lambda kv: kv[1]):
        if uid not in newest:
            continue
        facts = _load_account(engine, name, newest[uid]).facts
        events.extend(
            event_view(f, positions.get((uid, f.version)))
            for f in facts
            if f.effective_at in window
        )
        points = {f.effective_at for f in (*facts, *region_facts) if f.effective_at in window}
        if window.start is not None:
            points.add(window.start)
        decisions.extend(_decisions_at(engine, name, points))
    events.sort(key=lambda e: e.get("position") or 0)
    return events, decisions


def export_case(
    engine: Engine,
    account_id: str | None = None,
    region: str | None = None,
    from_: datetime | str | None = None,
    to: datetime | str | None = None,
) -> dict[str, Any]:
    """A case file for one account or one region: its events (both clocks, actor,
    command_id, cause, position) taking effect in [from, to], its rejections, the decision
    of every capability at `from` and at each change point in [from, to] (as `check`
    answers, everything recorded), and the log's head: its position and the integrity
    chain's hash there, as stored (`audit verify --receipt HASH@POSITION` checks it; null for
    a record from before the chain)."""
    if (account_id is None) == (region is None):
        raise ValueError("scope: give an account or a region, not both")
    window = _Window.given(from_, to)
    head = engine.position()
    code, accounts = _case_accounts(engine, account_id, region, head)
    events, decisions = _case_events_and_decisions(engine, code, accounts, window, head)
    scoped = (
        engine.rejections(account_id=account_id)
        if account_id is not None
        else engine.rejections(region=code)
    )
    rejections = [
        r for r in scoped if r["position"] <= head and parse_time(r["effective_at"]) in window
    ]
    start, end = window.start, window.end
    return {
        "scope": {"account_id": account_id} if account_id else {"region": code},
        "from": iso(start) if start else None,
        "to": iso(end) if end else None,
        "head": {"position": head, "hash": integrity.stored_hash(engine.app, head)},
        "events": events,
        "rejections": rejections,
        "decisions": decisions,
    }


CSV_COLUMNS = (
    "kind",
    "position",
    "subject",
    "type",
    "version",
    "effective_at",
    "recorded_at",
    "actor",
    "command_id",
    "cause",
    "capability",
    "allowed",
    "value",
    "reason",
    "details",
)


def case_csv(case: Mapping[str, Any]) -> str:
    """The case file as one flat CSV: a `kind` column says what each row is (`head`,
    `event`, `rejection`, `decision`); nested values (cause, details) are JSON."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, lineterminator="\n")
    w.writeheader()

    def js(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""

    head = case["head"]
    details = js({**case["scope"], "hash": head.get("hash")})
    w.writerow({"kind": "head", "position": head["position"], "details": details})
    for e in case["events"]:
        w.writerow(
            {
                "kind": "event",
                "position": e.get("position"),
                "subject": e["stream"],
                "type": e["type"],
                "version": e["version"],
                "effective_at": e["effective_at"],
                "recorded_at": e["recorded_at"],
                "actor": e["actor"] or "",
                "command_id": e["command_id"] or "",
                "cause": js(e["cause"]),
                "reason": e["data"].get("reason") or "",
                "details": js(e["data"]),
            }
        )
    for r in case["rejections"]:
        w.writerow(
            {
                "kind": "rejection",
                "position": r["position"],
                "subject": r["account_id"] or r["region"] or "",
                "type": r["command"],
                "effective_at": r["effective_at"],
                "recorded_at": r["recorded_at"],
                "actor": r["actor"] or "",
                "command_id": r["command_id"],
                "reason": r["reason"],
                "details": js(r["request"]),
            }
        )
    for d in case["decisions"]:
        w.writerow(
            {
                "kind": "decision",
                "position": d["position"],
                "subject": d["account_id"],
                "effective_at": d["at"],
                "capability": d["capability"],
                "allowed": "true" if d["allowed"] else "false",
                "value": "" if d["value"] is None else d["value"],
                "reason": d["reason"],
                "details": js(d["because"]),
            }
        )
    return buf.getvalue()


def verify(engine: Engine, receipt: str | None = None) -> dict[str, Any]:
    """`audit verify`: the integrity chain recomputed over the whole log (see
    entitlements/integrity.py); with a receipt HASH@POSITION, whether the log up to that
    position is unchanged since the receipt was written. A bad receipt is a ValueError."""
    parsed = integrity.parse_receipt(receipt) if receipt is not None else None
    return integrity.verify(engine.app, parsed).as_dict()
