"""The case file (`entitlements.application.audit.export_case`, `case_csv`): one account's or one
region's events, rejections and decisions over a window, with the log's head as a receipt."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from entitlements.application.audit_log import (
    AuditLog,
    check_region_code,
    event_view,
)
from entitlements.application.engine import Engine
from entitlements.domain.account import account_uuid
from entitlements.domain.events import ACCOUNT_REGISTERED, name_of
from entitlements.domain.region import region_id
from entitlements.domain.rules import CAPABILITIES
from entitlements.domain.times import When, iso, parse_time, parse_when

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
    log: AuditLog, account_id: str | None, region: str | None, head: int
) -> tuple[str, dict[UUID, str]]:
    """The case's region and its accounts (aggregate id -> account id): the one account,
    or every account registered in the region up to `head`."""
    if account_id is not None:
        return log.account(account_id).region, {account_uuid(account_id): account_id}
    code = check_region_code(region or "")
    accounts: dict[UUID, str] = {}
    for n in log.notifications(head):
        if name_of(n.topic) == ACCOUNT_REGISTERED:
            e = log.decode(n)
            if e.region == code:
                accounts[n.originator_id] = e.account_id
    if not accounts and not log.region_facts(code):
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
    engine: Engine,
    log: AuditLog,
    code: str,
    accounts: Mapping[UUID, str],
    window: _Window,
    head: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The case's events in the window (the region's and its accounts', as of `head`, in log
    order) and each account's decisions at the window's start and at every change point."""
    rid = region_id(code)
    positions = log.positions(set(accounts) | {rid}, head)
    newest: dict[UUID, int] = {}
    for uid, version in positions:
        newest[uid] = max(newest.get(uid, 0), version)
    region_facts = log.region_facts(code, newest[rid]) if rid in newest else []
    events = [
        event_view(f, positions.get((rid, f.version)))
        for f in region_facts
        if f.effective_at in window
    ]
    decisions: list[dict[str, Any]] = []
    for uid, name in sorted(accounts.items(), key=lambda kv: kv[1]):
        if uid not in newest:
            continue
        facts = log.account(name, newest[uid]).facts
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
    from_: When = None,
    to: When = None,
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
    log = AuditLog(engine)
    head = engine.position()
    code, accounts = _case_accounts(log, account_id, region, head)
    events, decisions = _case_events_and_decisions(engine, log, code, accounts, window, head)
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
        "head": {"position": head, "hash": log.stored_hash(head)},
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
