"""The auditors' door: read-only questions answered from the log itself.

    explain(engine, "cn-free-01", "host", at="2020-05-19")   # the decision, how long it holds, why
    history(engine, "cn-free-01", as_known_at="2020-06-01")  # events and rejections known by K
    jurisdiction(engine, "CN")                               # CN's requests never left CN
    residency(engine, "CN")                                  # no meeting from outside via CN
    export_case(engine, account_id="cn-free-01")             # a case file (JSON or CSV)
    bitemporal(engine, "cn-ent-02", "host")                  # its answers over both clocks

Everything here reads what is on file: the engine's public API (check, history, rejections,
position) and the log itself through one port, `audit_log.AuditLog` (the aggregates as of a
version, the notifications in order, decoded by the event-sourcing library's mapper) for
positions and command records. The rules are the domain's (`rules.fold_account`,
`fold_region`, `decide`); no projection is consulted, so an audit does not trust the very
read models it may be checking. Each question walks the log once: fine for an auditor, not
for the hot path. The questions live in sibling modules by kind (the log helpers in
`audit_log`, the jurisdiction promise in `audit_jurisdiction`, the residency promise in
`audit_residency`, the case file in `audit_export`); this module answers the rest and is
the one door to them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from entitlements.adapters import integrity
from entitlements.application.audit_export import CSV_COLUMNS, case_csv, export_case
from entitlements.application.audit_jurisdiction import (
    _OWN_EVENT,
    UNPROVEN,
    _walk_commands,
    jurisdiction,
    prove_jurisdiction,
)
from entitlements.application.audit_log import (
    _TINY,
    AuditLog,
    check_region_code,
    event_view,
    log_head,
)
from entitlements.application.audit_residency import residency
from entitlements.application.engine import Engine
from entitlements.domain.account import account_uuid
from entitlements.domain.bitemporal import Rectangle, rectangles
from entitlements.domain.rules import (
    Fact,
    UnknownCapability,
    Verdict,
    capability_region,
    check_capability,
    decide,
    fold_account,
    fold_region,
)
from entitlements.domain.times import When, iso, now, parse_time, parse_when

__all__ = [
    "CSV_COLUMNS",
    "UNPROVEN",
    "_OWN_EVENT",
    "_walk_commands",
    "bitemporal",
    "case_csv",
    "check_region_code",
    "event_view",
    "explain",
    "export_case",
    "history",
    "holds",
    "jurisdiction",
    "log_head",
    "parse_when",
    "prove_jurisdiction",
    "residency",
    "verify",
]


# -- explain: the decision, how long it holds, and the chain behind it ----------------------


def _verdicts(
    capability: str,
    account_facts: Sequence[Fact],
    code: str,
    region_facts: Sequence[Fact],
    known: datetime | None,
) -> Callable[[datetime], Verdict]:
    """decide() for the account and its region (`code`) as known at `known`, at any
    effective time."""

    def verdict(at: datetime) -> Verdict:
        return decide(
            capability,
            fold_account(account_facts, at, known),
            fold_region(code, region_facts, at, known),
        )

    return verdict


def _same(a: Verdict, b: Verdict) -> bool:
    return (a.allowed, a.value, a.reason) == (b.allowed, b.value, b.reason)


def holds(
    verdict: Callable[[datetime], Verdict],
    facts: Iterable[Fact],
    at: datetime,
    known: datetime | None,
) -> tuple[datetime | None, datetime | None]:
    """The effective interval [since, until) around `at` over which `verdict` (decide() as
    known at `known`, see `_verdicts`) gives the same allowed, value and reason (None: an
    open end). The answer can only change where a known event of `facts` (the account's
    and its region's) takes effect, so those times are the only candidates."""
    times = sorted({f.effective_at for f in facts if known is None or f.recorded_at <= known})
    here = verdict(at)
    since: datetime | None = None
    for t in reversed([t for t in times if t <= at]):
        if not _same(verdict(t - _TINY), here):
            since = t
            break
    until: datetime | None = None
    for t in (t for t in times if t > at):
        if not _same(verdict(t), here):
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
    engine: Engine, account_id: str, capability: str, at: When = None, as_known_at: When = None
) -> dict[str, Any]:
    """What `check` answers at (T, K), since and until when that holds in effective time
    (as known at K), and the chain behind it: each deciding event with both clocks and who
    asked, and for a rule-caused one the region rule and the region event that switched it.
    The decision is `engine.check`'s own; `check_agrees` says the domain fold gives it too."""
    t = parse_when("at", at) or now()
    k = parse_when("as_known_at", as_known_at)
    _known_capability(engine, account_id, capability)
    d = engine.check(account_id, capability, t, k)
    log = AuditLog(engine)
    account = log.account(account_id)
    code = capability_region(capability, account.region)  # R's events for route_via:R
    region_facts = log.region_facts(code)
    verdict = _verdicts(capability, account.facts, code, region_facts, k)
    mine = verdict(t)
    since, until = holds(verdict, (*account.facts, *region_facts), t, k)
    regions: dict[str, list[Fact]] = {code: region_facts}
    chain = []
    for f in d.because:
        link: dict[str, Any] = {**_who_and_clocks(f), "cause": dict(f.cause) if f.cause else None}
        cause = f.cause or {}
        if cause.get("rule"):
            where = str(cause.get("region", code))
            if where not in regions:
                regions[where] = log.region_facts(where)
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
        "region": account.region,
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
    entitlements/domain/bitemporal.py); `explain --png` draws them."""
    _known_capability(engine, account_id, capability)
    log = AuditLog(engine)
    account = log.account(account_id)
    code = capability_region(capability, account.region)
    return rectangles(capability, account.facts, code, log.region_facts(code))


def _known_capability(engine: Engine, account_id: str, capability: str) -> None:
    """An unknown account first (UnknownAccount, as `check` does), then an unknown
    capability (UnknownCapability)."""
    try:
        check_capability(capability)
    except UnknownCapability:
        engine.check(account_id, "join")
        raise


# -- history as known at K, with the rejections beside the events ---------------------------


def history(
    engine: Engine, account_id: str, as_known_at: When = None, rejections: bool = True
) -> list[dict[str, Any]]:
    """The account's events recorded by K (all, without K) and, with `rejections`, its
    rejected commands recorded by K, in log order; `kind` says which is which."""
    k = parse_when("as_known_at", as_known_at)
    log = AuditLog(engine)
    account = log.account(account_id)
    uid = account_uuid(account_id)
    positions = log.positions({uid})
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


def verify(engine: Engine, receipt: str | None = None) -> dict[str, Any]:
    """`audit verify`: the integrity chain recomputed over the whole log (see
    entitlements/adapters/integrity.py); with a receipt HASH@POSITION, whether the log up to that
    position is unchanged since the receipt was written. A bad receipt is a ValueError."""
    parsed = integrity.parse_receipt(receipt) if receipt is not None else None
    return AuditLog(engine).verify(parsed).as_dict()
