"""Narrow bitemporal rows: what an account's (or a region's) own events say, over
[effective_from, effective_to) x [recorded_from, recorded_to).

The analysts' `capability_intervals` is a SQL view over these rows (tables.py): it
intersects an account's rectangles with its region's and decides rules 1-8 in SQL. So a
rebuild computes, per account, only the few rectangles over which the fields the rules read
stay the same (about 1-3 rows an account), never a decision per capability per point.

An account's rows come from one sweep per recorded time over its facts (which `LogFacts`
keeps sorted by `Fact.order`): the state after the facts effective by T and recorded by K
is exactly what `entitlements.rules.fold_account` folds, and so what the check index's
timelines hold at (T, K); tests/integration/test_state_intervals.py holds the view equal to
`engine.check` at random (T, K). Rows start, in each belief, at the first effective time
known by then; before that the check answers rule 7, and the view has no row, as before.

Region rows cover the whole plane (a NULL `*_from` is "since always"), so the view's join
never loses a piece of an account's rectangle; a region with no events has no rows, and the
view reads it as no rules and no partners.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from entitlements.rules import FREE_HOSTING_RULE, REGION_RULES, Fact, iso

#: The columns an account row holds, after `account_id` and `region` and before the four
#: times. `None` for a field not in force.
ACCOUNT_FIELDS = (
    "registered",  # the registration is in force and known (else rule 7)
    "not_registered_reason",  # rule 7's reason, when not registered
    "plan",
    "channel",
    "partner",
    "suspended",  # rule 1
    "suspension_jurisdiction",
    "suspension_reason",
    "registration_suspended",  # pending sales approval
    "registration_suspended_rule",
    "manual_revocation",  # a hosting revocation asked for by someone
    "manual_revocation_reason",
    "rule_revocation",  # a hosting revocation a region rule caused
    "rule_revocation_rule",
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

#: (values, effective_from, effective_to): one rectangle of one belief, before merging.
Piece = tuple[tuple[Any, ...], datetime | None, datetime | None]
#: (values, effective_from, effective_to, recorded_from, recorded_to)
Rectangle = tuple[
    tuple[Any, ...], datetime | None, datetime | None, datetime | None, datetime | None
]


def not_registered_reason(facts: Sequence[Fact]) -> str:
    """Rule 7's reason, as `decide` words it: the account's registration (the first one in
    its facts, whatever is known) not in force or not known at (T, K)."""
    pending = next((f for f in facts if f.type == "AccountRegistered"), None)
    if pending is None:
        return "not registered at that time"
    return (
        f"registration takes effect at {iso(pending.effective_at)}, "
        f"recorded at {iso(pending.recorded_at)}: not in force or not yet known"
    )


def _account_belief(
    facts: Sequence[Fact], known: datetime | None, unregistered: str
) -> list[Piece]:
    """The account's fields over effective time as known at `known` (None: everything), from
    the first effective time known on, equal neighbours merged. Mirrors `fold_account`."""
    pieces: list[Piece] = []
    registered = False
    plan, channel, partner = "free", "online", None
    suspension = reg_suspended = manual = rule_rev = None
    current: tuple[Any, ...] | None = None
    start: datetime | None = None
    at: datetime | None = None
    for f in facts:
        if known is not None and f.recorded_at > known:
            continue
        t = f.effective_at
        if (
            t != at and at is not None
        ):  # every fact effective at `at` is in: its state holds from `at`
            values = _account_values(
                registered,
                unregistered,
                plan,
                channel,
                partner,
                suspension,
                reg_suspended,
                manual,
                rule_rev,
            )
            if values != current:
                if current is not None:
                    pieces.append((current, start, at))
                current, start = values, at
        at = t
        kind, data = f.type, f.data
        if kind == "AccountRegistered":
            registered = True
        if kind in (
            "AccountRegistered",
            "RegistrationApproved",
            "SubscriptionOpened",
            "SubscriptionClosed",
        ):
            plan = data.get("plan", "free")
            channel = data.get("channel", "online")
            partner = data.get("partner")
        if kind == "RegistrationSuspended":
            reg_suspended = f
        elif kind == "RegistrationApproved":
            reg_suspended = None
        elif kind == "MovedToPartner":
            channel, partner = "partner", data["partner"]
        elif kind == "HostingRevoked":
            if f.cause:
                rule_rev = f
            else:
                manual = f
        elif kind == "HostingRestored":
            if f.cause:
                rule_rev = None
            else:
                manual = None
        elif kind == "AccountSuspended":
            suspension = f
        elif kind == "AccountReinstated":
            suspension = None
    if at is None:
        return pieces
    values = _account_values(
        registered,
        unregistered,
        plan,
        channel,
        partner,
        suspension,
        reg_suspended,
        manual,
        rule_rev,
    )
    if values != current:
        if current is not None:
            pieces.append((current, start, at))
        current, start = values, at
    pieces.append((current, start, None))  # type: ignore[arg-type]
    return pieces


def _account_values(
    registered: bool,
    unregistered: str,
    plan: str,
    channel: str,
    partner: str | None,
    suspension: Fact | None,
    reg_suspended: Fact | None,
    manual: Fact | None,
    rule_rev: Fact | None,
) -> tuple[Any, ...]:
    """The row's fields (ACCOUNT_FIELDS), with what `decide` reads of each event in force."""
    return (
        registered,
        None if registered else unregistered,
        plan,
        channel,
        partner,
        suspension is not None,
        suspension.data.get("jurisdiction") if suspension is not None else None,
        suspension.data.get("reason") if suspension is not None else None,
        reg_suspended is not None,
        (reg_suspended.cause or {}).get("rule", "registration_suspended")
        if reg_suspended is not None
        else None,
        manual is not None,
        manual.data.get("reason", "") if manual is not None else None,
        rule_rev is not None,
        (rule_rev.cause or {}).get("rule", FREE_HOSTING_RULE) if rule_rev is not None else None,
    )


def account_rows(account_id: str, region: str, facts: Sequence[Fact]) -> list[tuple[Any, ...]]:
    """The account's rows (ACCOUNT_COLUMNS) from its facts, sorted by `Fact.order`."""
    if not facts:
        return []
    unregistered = not_registered_reason(facts)
    first_known = facts[0].recorded_at
    same_known = True
    for f in facts:
        if f.recorded_at != first_known:
            same_known = False
            break
    if same_known:  # one belief (most accounts): no merging across recorded times
        return [
            (account_id, region, *values, eff_from, eff_to, first_known, None)
            for values, eff_from, eff_to in _account_belief(facts, None, unregistered)
        ]
    knowns = sorted({f.recorded_at for f in facts})
    beliefs = [(k, _account_belief(facts, k, unregistered)) for k in knowns]
    return [
        (account_id, region, *values, eff_from, eff_to, rec_from, rec_to)
        for values, eff_from, eff_to, rec_from, rec_to in merge_beliefs(beliefs)
    ]


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
        if f.type == "RegionRuleApplied":
            on.add(f.data["rule"])
            lifted.discard(f.data["rule"])
        elif f.type == "RegionRuleLifted":
            on.discard(f.data["rule"])
            lifted.add(f.data["rule"])
        elif f.type == "PartnerAuthorized":
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


def region_rows(code: str, facts: Sequence[Fact]) -> list[tuple[Any, ...]]:
    """The region's rows (REGION_COLUMNS), covering every (T, K); none without facts."""
    if not facts:
        return []
    knowns = sorted({f.recorded_at for f in facts})
    beliefs: list[tuple[datetime | None, list[Piece]]] = [(None, [(_NO_RULES, None, None)])]
    beliefs += [(k, _region_belief(facts, k)) for k in knowns]
    return [
        (code, *values, eff_from, eff_to, rec_from, rec_to)
        for values, eff_from, eff_to, rec_from, rec_to in merge_beliefs(beliefs)
    ]
