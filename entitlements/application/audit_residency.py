"""The residency promise, shown from the log (`entitlements audit residency REGION`): once
REGION's data centres are isolated (`data_centre_isolated`), no meeting of an account outside
REGION may be routed through them.

For every account outside REGION whose meetings could be routed via REGION at some time
(`route_via:REGION` allowed, rule 10), the effective-time intervals when they could:
- as known now (the log's final word; the rules make these stop where an isolation starts);
- as known then: at each instant T, as known at T (what a meeting service asking at T was
  told). Where an isolation was recorded after it took effect (backdated), the service was
  told "yes" while the isolation was in force: that stretch is a violation.
With the isolation's own clocks (each switch: effective, recorded, ahead of time or
backdated, who asked) and the exposure before it took effect. Read from the log with the
domain's rules (`fold_account`, `fold_region`, `decide`), no projection, like every audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from entitlements.application.audit_log import AuditLog, check_region_code
from entitlements.application.engine import Engine
from entitlements.domain.event_facts import fact_from_event
from entitlements.domain.events import ACCOUNT_REGISTERED, RULE_SWITCHES, name_of
from entitlements.domain.rules import (
    ISOLATION_RULE,
    ROUTE_VIA,
    Fact,
    decide,
    fold_account,
    fold_region,
)
from entitlements.domain.times import iso

#: An effective-time interval [since, until); until None: open-ended.
Interval = tuple[datetime, datetime | None]


def residency(engine: Engine, region: str) -> dict[str, Any]:
    """The residency proof of `region` (see the module's docstring): `holds` is False when,
    as known then, an account outside `region` could be routed via it while its isolation
    was in force (each such stretch is a violation)."""
    code = check_region_code(region)
    log = AuditLog(engine)
    head = engine.position()
    region_facts = log.region_facts(code)
    switches = [
        f for f in region_facts if f.type in RULE_SWITCHES and f.data["rule"] == ISOLATION_RULE
    ]
    isolated = _periods(switches)
    accounts, violations = [], []
    for account_id, home, facts in _accounts_outside(log, code, head):
        now, then = _routable(code, facts, region_facts)
        if not now and not then:
            continue
        accounts.append(
            {
                "account_id": account_id,
                "region": home,
                "as_known_now": _shown(now),
                "as_known_then": _shown(then),
                "before_isolation": _shown(_clip(now, None, _first_start(isolated))),
            }
        )
        for since, until in _overlaps(then, isolated) + _overlaps(now, isolated):
            violations.append(_violation(account_id, home, code, since, until, switches))
    return {
        "region": code,
        "capability": ROUTE_VIA + code,
        "holds": not violations,
        "head": {"position": head},
        "isolation": [_clocks(f) for f in switches],
        "isolated": _shown(isolated),
        "exposure": _exposure(accounts, isolated),
        "accounts": accounts,
        "violations": violations,
        "method": (
            f"Each account outside {code}: {ROUTE_VIA}{code} decided by the domain's rules "
            "from the log at every time where an answer can change; 'as known now' with "
            "everything recorded, 'as known then' at each instant T with what was recorded "
            f"by T. A violation: an interval in which it was allowed overlaps a period in "
            f"which {ISOLATION_RULE} was in force in {code} (as known now)."
        ),
    }


def _accounts_outside(log: AuditLog, code: str, stop: int) -> list[tuple[str, str, list[Fact]]]:
    """(account, its region, its facts in effective order) of every account outside `code`,
    from one walk of the log."""
    found: dict[Any, tuple[str, str, list[Fact]]] = {}
    for n in log.notifications(stop):
        kind = name_of(n.topic)
        if kind != ACCOUNT_REGISTERED and n.originator_id not in found:
            continue  # a region event, a command record, or an account inside `code`
        e = log.decode(n)
        if kind == ACCOUNT_REGISTERED:
            if e.region == code:
                continue
            found[n.originator_id] = (e.account_id, e.region, [])
        account_id, _, facts = found[n.originator_id]
        facts.append(fact_from_event(f"account:{account_id}", e))
    for _, _, facts in found.values():
        facts.sort(key=lambda f: f.order)
    return list(found.values())


def _routable(
    code: str, facts: Sequence[Fact], region_facts: Sequence[Fact]
) -> tuple[list[Interval], list[Interval]]:
    """The effective-time intervals in which `route_via:code` is allowed: as known now, and
    as known then (at each T, as known at T)."""
    capability = ROUTE_VIA + code
    mine = (*facts, *region_facts)

    def now(t: datetime) -> bool:
        return decide(
            capability, fold_account(facts, t), fold_region(code, region_facts, t)
        ).allowed

    def then(t: datetime) -> bool:
        acc, reg = fold_account(facts, t, t), fold_region(code, region_facts, t, t)
        return decide(capability, acc, reg).allowed

    effective = sorted({f.effective_at for f in mine})
    both = sorted({f.effective_at for f in mine} | {f.recorded_at for f in mine})
    return _intervals(now, effective), _intervals(then, both)


def _intervals(allowed: Callable[[datetime], bool], points: Sequence[datetime]) -> list[Interval]:
    """Where `allowed` holds, for a step function that can change only at `points` (sorted)
    and is false before the first (nothing registered yet)."""
    out: list[Interval] = []
    since: datetime | None = None
    for t in points:
        on = allowed(t)
        if on and since is None:
            since = t
        elif not on and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, None))
    return out


def _periods(switches: Sequence[Fact]) -> list[Interval]:
    """The effective-time periods in which the isolation is in force, as known now (rule
    switches apply in effective order; the last one in force decides)."""
    return _intervals(
        lambda t: bool(fold_region("", switches, t).rules_on),
        sorted({f.effective_at for f in switches}),
    )


def _overlaps(intervals: Sequence[Interval], periods: Sequence[Interval]) -> list[Interval]:
    """The parts of `intervals` inside `periods`."""
    found = []
    for lo, hi in periods:
        found += _clip(intervals, lo, hi)
    return found


def _clip(
    intervals: Sequence[Interval], lo: datetime | None, hi: datetime | None
) -> list[Interval]:
    """The parts of `intervals` within [lo, hi) (None: unbounded on that side)."""
    out: list[Interval] = []
    for since, until in intervals:
        start = since if lo is None else max(since, lo)
        ends = [x for x in (until, hi) if x is not None]
        end = min(ends) if ends else None
        if end is None or start < end:
            out.append((start, end))
    return out


def _first_start(periods: Sequence[Interval]) -> datetime | None:
    return periods[0][0] if periods else None


def _shown(intervals: Sequence[Interval]) -> list[dict[str, str | None]]:
    return [{"since": iso(s), "until": iso(u) if u else None} for s, u in intervals]


def _clocks(f: Fact) -> dict[str, Any]:
    """A switch of the isolation with both its clocks, how far apart, and who asked."""
    gap = f.recorded_at - f.effective_at
    days = abs(gap).total_seconds() / 86400
    if gap.total_seconds() < 0:
        when = f"recorded {days:g} days ahead of taking effect"
    elif gap.total_seconds() > 0:
        when = f"backdated: recorded {days:g} days after taking effect"
    else:
        when = "recorded as it took effect"
    return {
        "type": f.type,
        "version": f.version,
        "effective_at": iso(f.effective_at),
        "recorded_at": iso(f.recorded_at),
        "clocks": when,
        "actor": f.data.get("actor"),
        "command_id": f.data.get("command_id"),
    }


def _exposure(accounts: list[dict[str, Any]], isolated: Sequence[Interval]) -> dict[str, Any]:
    """Before the isolation first took effect: how many accounts outside could be routed via
    the region, and from when (as known now)."""
    exposed = [a for a in accounts if a["before_isolation"]]
    return {
        "until": iso(isolated[0][0]) if isolated else None,
        "accounts": len(exposed),
        "since": min((a["before_isolation"][0]["since"] for a in exposed), default=None),
    }


def _violation(
    account_id: str,
    home: str,
    code: str,
    since: datetime,
    until: datetime | None,
    switches: Sequence[Fact],
) -> dict[str, Any]:
    """One stretch in which `account_id` could be routed via an isolated `code`, and the
    isolation event in force then (its clocks explain it: recorded after it took effect)."""
    rule = next((f for f in reversed(switches) if f.effective_at <= since), None)
    recorded = f", recorded {iso(rule.recorded_at)}" if rule is not None else ""
    return {
        "account_id": account_id,
        "region": home,
        "since": iso(since),
        "until": iso(until) if until else None,
        "rule_event": _clocks(rule) if rule is not None else None,
        "violation": f"{account_id} in {home} could be routed via {code} from {iso(since)} "
        f"to {iso(until) if until else 'now'}, while {ISOLATION_RULE} was in force in {code}"
        f"{recorded}",
    }
