"""Narrow bitemporal rows: what an account's (or a region's) own events say, over
[effective_from, effective_to) x [recorded_from, recorded_to).

The analysts' `capability_intervals` is a SQL view over these rows (tables.py): it
intersects an account's rectangles with its region's and decides rules 1-8 in SQL. So a
rebuild computes, per account, only the few rectangles over which the fields the rules read
stay the same (about 1-3 rows an account), never a decision per capability per point.

An account's rows come from one sweep per recorded time over its facts (which `LogFacts`
keeps sorted by `Fact.order`): the state after the facts effective by T and recorded by K
is exactly what `entitlements.domain.rules.fold_account` folds, and so what the check index's
timelines hold at (T, K); tests/integration/test_state_intervals.py holds the view equal to
`engine.check` at random (T, K). Rows start, in each belief, at the first effective time
known by then; before that the check answers rule 7, and the view has no row, as before.

Region rows cover the whole plane (a NULL `*_from` is "since always"), so the view's join
never loses a piece of an account's rectangle; a region with no events has no rows, and the
view reads it as no rules and no partners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from entitlements.domain import events as ev
from entitlements.domain.rules import FREE_HOSTING_RULE, REGION_RULES, Fact
from entitlements.domain.times import iso

#: The columns an account row holds, after `account_id` and `region` and before the four
#: times. NULL: not in force. Texts are as `decide` quotes them (str() of what the event says).
ACCOUNT_FIELDS = (
    "not_registered_reason",  # rule 7's reason; NULL: the registration is in force and known
    "plan",
    "channel",
    "partner",
    "suspension_jurisdiction",  # rule 1: an account suspension in force (and its reason)
    "suspension_reason",
    "registration_suspended_rule",  # registration pending sales approval, by this rule
    "manual_revocation_reason",  # a hosting revocation asked for by someone ('' if no reason)
    "rule_revocation_rule",  # a hosting revocation a region rule caused, by this rule
    "data_regions",  # rule 10: the choice in force, ", "-separated in the order chosen
)
#: The columns a region row holds, after `region` and before the four times.
REGION_FIELDS = (
    *REGION_RULES,  # each: the rule is in force
    "rules_lifted",  # the rules whose last switch was a lift, comma-separated, sorted
    "partners",  # authorized partners, ", "-separated, sorted (the text rule 6's reason quotes)
)
TIMES = ("effective_from", "effective_to", "recorded_from", "recorded_to")
ACCOUNT_COLUMNS = ("account_id", "region", *ACCOUNT_FIELDS, *TIMES)
REGION_COLUMNS = ("region", *REGION_FIELDS, *TIMES)
#: The `accounts` table's row: the account now, as known now.
ACCOUNT_ROW_COLUMNS = (
    "account_id",
    "region",
    "plan",
    "channel",
    "partner",
    "status",
    "registered_at",
)

#: (values, effective_from, effective_to): one rectangle of one belief, before merging.
Piece = tuple[tuple[Any, ...], datetime | None, datetime | None]
#: (values, effective_from, effective_to, recorded_from, recorded_to)
Rectangle = tuple[
    tuple[Any, ...], datetime | None, datetime | None, datetime | None, datetime | None
]
#: How a time is written (SQLite keeps text); None stays None.
When = Callable[[datetime | None], Any]
_PLAN_SETTERS = frozenset(ev.PLAN_SETTERS)


def _same(t: datetime | None) -> Any:
    return t


def not_registered_reason(registration: Fact | None) -> str:
    """Rule 7's reason, as `decide` words it, for an account whose (first) registration is
    `registration`: not in force or not known at (T, K)."""
    if registration is None:
        return "not registered at that time"
    return (
        f"registration takes effect at {iso(registration.effective_at)}, "
        f"recorded at {iso(registration.recorded_at)}: not in force or not yet known"
    )


#: Where each field sits in an account's belief values (the state table's columns' order).
(
    _UNREGISTERED,
    _PLAN,
    _CHANNEL,
    _PARTNER,
    _JURISDICTION,
    _SUSPENSION,
    _REG_RULE,
    _MANUAL,
    _BY_RULE,
    _CHOICE,
) = range(10)


def _account_belief(
    facts: Sequence[Fact], known: datetime | None, unregistered: str
) -> list[Piece]:
    """The account's fields over effective time as known at `known` (None: everything), from
    the first effective time known on, equal neighbours merged. Mirrors `fold_account`: the
    state after every fact effective by T (in `Fact.order`) and recorded by K."""
    pieces: list[Piece] = []
    v: list[Any] = [unregistered, "free", "online", None, None, None, None, None, None, None]
    current: tuple[Any, ...] | None = None
    start: datetime | None = None
    at: datetime | None = None
    for f in facts:
        if known is not None and f.recorded_at > known:
            continue
        t = f.effective_at
        if t != at and at is not None:  # every fact effective at `at` is in: it holds from `at`
            current, start = _hold(pieces, tuple(v), current, start, at)
        at = t
        _take(v, f)
    if at is None:
        return pieces
    current, start = _hold(pieces, tuple(v), current, start, at)
    assert current is not None  # values are never None
    pieces.append((current, start, None))
    return pieces


def _hold(
    pieces: list[Piece],
    values: tuple[Any, ...],
    current: tuple[Any, ...] | None,
    start: datetime | None,
    at: datetime,
) -> tuple[tuple[Any, ...] | None, datetime | None]:
    """`values` hold from `at`: when they differ from `current`, the current piece ends at
    `at` (into `pieces`) and a new one starts; the (current, start) to go on with."""
    if values == current:
        return current, start
    if current is not None:
        pieces.append((current, start, at))
    return values, at


def _take(v: list[Any], f: Fact) -> None:
    """One fact's change to an account's belief values `v` (see `_UNREGISTERED`...), as
    `fold_account` takes it."""
    kind, data = f.type, f.data
    if kind in _PLAN_SETTERS:
        if kind == ev.ACCOUNT_REGISTERED:
            v[_UNREGISTERED] = None
        v[_PLAN] = data.get("plan", "free")
        v[_CHANNEL] = data.get("channel", "online")
        v[_PARTNER] = data.get("partner")
    if kind == ev.REGISTRATION_SUSPENDED:
        v[_REG_RULE] = str((f.cause or {}).get("rule", "registration_suspended"))
    elif kind == ev.REGISTRATION_APPROVED:
        v[_REG_RULE] = None
    elif kind == ev.MOVED_TO_PARTNER:
        v[_CHANNEL], v[_PARTNER] = "partner", data["partner"]
    elif kind == ev.HOSTING_REVOKED:
        if f.cause:
            v[_BY_RULE] = str(f.cause.get("rule", FREE_HOSTING_RULE))
        else:
            v[_MANUAL] = str(data.get("reason", ""))
    elif kind == ev.HOSTING_RESTORED:
        v[_BY_RULE if f.cause else _MANUAL] = None
    elif kind == ev.ACCOUNT_SUSPENDED:
        v[_JURISDICTION] = str(data.get("jurisdiction"))
        v[_SUSPENSION] = str(data.get("reason"))
    elif kind == ev.ACCOUNT_REINSTATED:
        v[_JURISDICTION] = v[_SUSPENSION] = None
    elif kind == ev.DATA_REGIONS_CHOSEN:
        v[_CHOICE] = ", ".join(data["regions"])  # as rule 10's reason quotes it


def account_rows(
    account_id: str,
    region: str,
    facts: Sequence[Fact],
    now: datetime,
    when: When | None = None,
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The account's `accounts` row (ACCOUNT_ROW_COLUMNS) and its state rows
    (ACCOUNT_COLUMNS), from its facts (sorted by `Fact.order`), times written by `when`."""
    w = when or _same
    first, first_known = facts[0], facts[0].recorded_at
    registration: Fact | None
    if first.type == ev.ACCOUNT_REGISTERED and all(f.recorded_at >= first_known for f in facts):
        # Registered first in effective order and first known: no unregistered piece at all.
        registration, unregistered = first, ""
    else:
        registration = next((f for f in facts if f.type == ev.ACCOUNT_REGISTERED), None)
        unregistered = not_registered_reason(registration)
    if all(f.recorded_at == first_known for f in facts):  # one belief (most accounts)
        latest = _account_belief(facts, None, unregistered)
        k = w(first_known)
        rows = [
            (account_id, region, *values, w(eff_from), w(eff_to), k, None)
            for values, eff_from, eff_to in latest
        ]
    else:
        knowns = sorted({f.recorded_at for f in facts})
        beliefs = [(k, _account_belief(facts, k, unregistered)) for k in knowns]
        latest = beliefs[-1][1]
        rows = [
            (account_id, region, *values, w(eff_from), w(eff_to), w(rec_from), w(rec_to))
            for values, eff_from, eff_to, rec_from, rec_to in merge_beliefs(beliefs)
        ]
    return _account_now(account_id, region, latest, now, registration, w), rows


def _account_now(
    account_id: str,
    region: str,
    latest: list[Piece],
    now: datetime,
    registration: Fact | None,
    w: When,
) -> tuple[Any, ...]:
    """The account as it stands at `now` as known now (`fold_account(facts, at=now)`); not
    registered by then (a future registration): as it will stand, after every fact."""
    values = next(
        (
            v
            for v, eff_from, eff_to in latest
            if eff_from is not None and eff_from <= now and (eff_to is None or now < eff_to)
        ),
        None,
    )
    if values is None or values[0] is not None:
        values = latest[-1][0]
    registered = values[0] is None
    status = (
        "suspended"
        if values[4] is not None
        else ("registration_suspended" if values[6] is not None else "active")
    )
    return (
        account_id,
        region if registered else "",
        values[1],
        values[2],
        values[3],
        status,
        w(registration.effective_at) if registered and registration else None,
    )


def merge_beliefs(beliefs: Iterable[tuple[datetime | None, list[Piece]]]) -> list[Rectangle]:
    """Rectangles from beliefs in recorded order: a piece believed unchanged (same fields,
    same effective range) from one belief to the next keeps its recorded_from."""
    open_pieces: dict[Piece, datetime | None] = {}
    closed: list[Rectangle] = []
    for known, pieces in beliefs:
        now = set(pieces)
        for piece in [p for p in open_pieces if p not in now]:
            closed.append((*piece, open_pieces.pop(piece), known))
        for piece in pieces:
            if piece not in open_pieces:
                open_pieces[piece] = known
    closed.extend((*piece, since, None) for piece, since in open_pieces.items())
    return closed


_NO_RULES: tuple[Any, ...] = (*(False for _ in REGION_RULES), None, None)


def _region_belief(facts: Sequence[Fact], known: datetime) -> list[Piece]:
    """The region's fields over all effective time as known at `known` (before its first
    effective time: no rules, no partners). Mirrors `fold_region`."""
    pieces: list[Piece] = []
    on: set[str] = set()
    lifted: set[str] = set()
    partners: set[str] = set()
    current, start = _NO_RULES, None
    at: datetime | None = None
    for f in facts:
        if f.recorded_at > known:
            continue
        if f.effective_at != at and at is not None:
            values = _region_values(on, lifted, partners)
            if values != current:
                pieces.append((current, start, at))
                current, start = values, at
        at = f.effective_at
        if f.type == ev.REGION_RULE_APPLIED:
            on.add(f.data["rule"])
            lifted.discard(f.data["rule"])
        elif f.type == ev.REGION_RULE_LIFTED:
            on.discard(f.data["rule"])
            lifted.add(f.data["rule"])
        elif f.type == ev.PARTNER_AUTHORIZED:
            partners.add(f.data["partner"])
    if at is not None:
        values = _region_values(on, lifted, partners)
        if values != current:
            pieces.append((current, start, at))
            current, start = values, at
    pieces.append((current, start, None))
    return pieces


def _region_values(on: set[str], lifted: set[str], partners: set[str]) -> tuple[Any, ...]:
    return (
        *(rule in on for rule in REGION_RULES),
        ",".join(sorted(lifted)) or None,
        ", ".join(sorted(partners)) or None,
    )


def region_rows(
    code: str, facts: Sequence[Fact], when: When | None = None
) -> list[tuple[Any, ...]]:
    """The region's rows (REGION_COLUMNS), covering every (T, K); none without facts."""
    w = when or _same
    if not facts:
        return []
    knowns = sorted({f.recorded_at for f in facts})
    beliefs: list[tuple[datetime | None, list[Piece]]] = [(None, [(_NO_RULES, None, None)])]
    beliefs += [(k, _region_belief(facts, k)) for k in knowns]
    return [
        (code, *values, w(eff_from), w(eff_to), w(rec_from), w(rec_to))
        for values, eff_from, eff_to, rec_from, rec_to in merge_beliefs(beliefs)
    ]
