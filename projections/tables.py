"""The SQL read models analysts query (SQLAlchemy Core), and the projection's tracking row.

Tables (one generation each; a rebuild writes a fresh one, then swaps it in):

- `accounts`: one row per account, its current region, plan, channel, partner and status.
- `account_state_intervals`: what an account's own events say (registration in force,
  plan, channel, partner, suspension, pending registration, hosting revocations) over
  [effective_from, effective_to) x [recorded_from, recorded_to); NULL `*_to` is open-ended.
- `region_state_intervals`: a region's rules in force, lifted rules and authorized
  partners, the same way; they cover every (T, K) (a NULL `*_from` is "since always").

Views (over the current tables):

- `capability_intervals`: what each capability was, over which effective and recorded
  times: an account's rectangles intersected with its region's, for each of the seven
  capabilities, decided by CASE expressions that reproduce `entitlements.domain.rules.decide`
  (allowed, value and the very same reason text), with the account's region and plan in that
  rectangle; and `route_via:R` for every region R the tables know (an account's or one with
  rows of its own), its rectangles intersected with R's (rule 10 reads R's isolation).
- `capabilities_now`: what holds now, as known now. Exact at any moment, including when a
  future-effective event's time arrives.
- `capability_day_changes` (projections/daily_counts.py): the analysts' daily counts, as
  +1 / -1 changes per day, region and plan, read from `capability_intervals`.

`projection_tracking`: the log position each read model reflects, written in the same
transaction as its rows, so a replayed delivery changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union,
    union_all,
)
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.sql.elements import ColumnElement

from entitlements.domain.rules import (
    BOOLEAN_CAPABILITIES,
    CAPABILITIES,
    CHANNEL_CLOSED_BY,
    ISOLATION_RULE,
    LIMIT_CAPABILITIES,
    LIMITS,
    PAID_PLANS,
    REGION_RULES,
    ROUTE_VIA,
)


@dataclass(frozen=True)
class ReadModelTables:
    """One generation of the read-model tables (a rebuild writes a fresh one, then swaps)."""

    metadata: MetaData
    accounts: Table
    account_states: Table
    region_states: Table
    suffix: str

    @property
    def all(self) -> tuple[Table, ...]:
        return (self.accounts, self.account_states, self.region_states)


def _times() -> list[Column[Any]]:
    return [
        Column("effective_from", DateTime(timezone=True)),
        Column("effective_to", DateTime(timezone=True)),
        Column("recorded_from", DateTime(timezone=True)),
        Column("recorded_to", DateTime(timezone=True)),
    ]


def define_tables(suffix: str = "") -> ReadModelTables:
    md = MetaData()
    accounts = Table(
        f"accounts{suffix}",
        md,
        Column("account_id", String(64), primary_key=True),
        Column("region", String(2), nullable=False, index=True),
        Column("plan", String(16), nullable=False),
        Column("channel", String(16), nullable=False),
        Column("partner", String(200)),
        Column("status", String(32), nullable=False),
        Column("registered_at", DateTime(timezone=True), nullable=False),
    )
    account_states = Table(
        f"account_state_intervals{suffix}",
        md,
        Column("account_id", String(64), nullable=False),
        Column("region", String(2), nullable=False),
        Column("not_registered_reason", String),
        Column("plan", String(16), nullable=False),
        Column("channel", String(16), nullable=False),
        Column("partner", String(200)),
        Column("suspension_jurisdiction", String(16)),
        Column("suspension_reason", String),
        Column("registration_suspended_rule", String(64)),
        Column("manual_revocation_reason", String),
        Column("rule_revocation_rule", String(64)),
        Column("data_regions", String),
        *_times(),
        Index(f"ix_account_states{suffix}_account", "account_id"),
    )
    region_states = Table(
        f"region_state_intervals{suffix}",
        md,
        Column("region", String(2), nullable=False),
        *(Column(rule, Boolean, nullable=False) for rule in REGION_RULES),
        Column("rules_lifted", String),
        Column("partners", String),
        *_times(),
        Index(f"ix_region_states{suffix}_region", "region"),
    )
    account_states.c.effective_from.nullable = False
    account_states.c.recorded_from.nullable = False
    return ReadModelTables(md, accounts, account_states, region_states, suffix)


tracking_metadata = MetaData()
tracking = Table(
    "projection_tracking",
    tracking_metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
)

CURRENT = define_tables()

#: The `capability_intervals` view's columns (never created as a table: see
#: `capability_intervals_sql`), so queries can be written against it in Core.
view_metadata = MetaData()
capability_intervals = Table(
    "capability_intervals",
    view_metadata,
    Column("account_id", String(64)),
    Column("capability", String(32)),
    Column("allowed", Boolean),
    Column("value", Integer),
    Column("reason", String),
    *_times(),
    Column("region", String(2)),
    Column("plan", String(16)),
)
#: Dropped in this order (a view before the one it reads).
VIEWS = ("capability_day_changes", "capabilities_now", "capability_intervals")


def capability_intervals_sql(engine: SqlEngine, tables: ReadModelTables = CURRENT) -> str:
    """CREATE VIEW capability_intervals, compiled for the engine's dialect: one branch per
    capability (UNION ALL), so a filter on `capability` or `account_id` reaches the tables."""
    query = _capabilities(tables)
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    return f"CREATE VIEW capability_intervals AS {compiled}"


def _capabilities(tables: ReadModelTables, now: Any = None) -> Any:
    """The capability rows: each account rectangle intersected with each overlapping
    region rectangle, decided per capability. With `now`, only the rectangles holding at
    (now, as known now), filtered on the tables' own columns (a filter on the view's
    computed times would reach no index and decide every row first)."""
    a, r = tables.account_states.c, tables.region_states.c
    overlaps = and_(r.region == a.region, _overlapping(a, r, now))
    holding: list[Any] = []
    if now is not None:
        holding = [
            a.recorded_to.is_(None),
            a.effective_from <= now,
            or_(a.effective_to.is_(None), a.effective_to > now),
        ]
    joined = tables.account_states.outerjoin(tables.region_states, overlaps)
    times = _intersected(a, r, now)
    branches = []
    for capability in CAPABILITIES:
        verdict = _decide(capability, a, r)
        branches.append(_branch(a, literal(capability, String), verdict, times, joined, holding))
    branches.append(_route_via(tables, now, holding))
    return union_all(*branches)


def _later(x: Any, y: Any) -> ColumnElement[Any]:  # y NULL: since always
    return case((or_(y.is_(None), y < x), x), else_=y)


def _earlier(x: Any, y: Any) -> ColumnElement[Any]:  # NULL: open-ended
    return case((y.is_(None), x), (x.is_(None), y), (y < x, y), else_=x)


def _overlapping(a: Any, r: Any, now: Any) -> ColumnElement[Any]:
    """A region rectangle `r` overlapping the account rectangle `a` (and, with `now`,
    holding now as known now)."""
    overlaps = and_(
        or_(
            r.effective_from.is_(None), a.effective_to.is_(None), r.effective_from < a.effective_to
        ),
        or_(r.effective_to.is_(None), r.effective_to > a.effective_from),
        or_(r.recorded_from.is_(None), a.recorded_to.is_(None), r.recorded_from < a.recorded_to),
        or_(r.recorded_to.is_(None), r.recorded_to > a.recorded_from),
    )
    if now is not None:
        overlaps = and_(
            overlaps,
            r.recorded_to.is_(None),
            or_(r.effective_from.is_(None), r.effective_from <= now),
            or_(r.effective_to.is_(None), r.effective_to > now),
        )
    return overlaps


def _intersected(a: Any, r: Any, now: Any) -> list[Any]:
    """The times of an account rectangle intersected with a region's (a missing region
    rectangle, NULL: the account's own)."""
    times = [
        _later(a.effective_from, r.effective_from).label("effective_from"),
        _earlier(a.effective_to, r.effective_to).label("effective_to"),
        _later(a.recorded_from, r.recorded_from).label("recorded_from"),
    ]
    if now is None:
        times.append(_earlier(a.recorded_to, r.recorded_to).label("recorded_to"))
    return times


def _route_via(tables: ReadModelTables, now: Any, holding: list[Any]) -> Any:
    """`route_via:R` for every region R the tables know: each account rectangle joined with
    every R, then intersected with R's rectangles (rule 10 reads R's isolation)."""
    a = tables.account_states.c
    known = union(
        select(tables.account_states.c.region.label("code")),
        select(tables.region_states.c.region.label("code")),
    ).subquery("known_regions")
    via_table = tables.region_states.alias("via")
    via = via_table.c
    joined = tables.account_states.join(known, known.c.code != "").outerjoin(
        via_table, and_(via.region == known.c.code, _overlapping(a, via, now))
    )
    capability = literal(ROUTE_VIA, String) + known.c.code
    verdict = _decide_route_via(a, via, known.c.code)
    return _branch(a, capability, verdict, _intersected(a, via, now), joined, holding)


def _branch(
    a: Any, capability: Any, verdict: Any, times: list[Any], joined: Any, holding: list[Any]
) -> Any:
    """One capability's rows of the view: the account, the capability, its verdict
    (allowed, value, reason), the intersected times, the account's region and plan."""
    allowed, value, reason = verdict
    return (
        select(
            a.account_id,
            capability.label("capability"),
            allowed.label("allowed"),
            value.label("value"),
            reason.label("reason"),
            *times,
            a.region,
            a.plan,
        )
        .select_from(joined)
        .where(*holding)
    )


def _decide_route_via(a: Any, via: Any, code: Any) -> tuple[ColumnElement[Any], ...]:
    """(allowed, value, reason) of `route_via:code`: rules 1, 7 and 10 as `decide` applies
    them (`decide_route_via`), in the same order, with the same words."""
    none = cast(null(), Integer)
    paid = a.plan.in_(PAID_PLANS)
    chosen = a.data_regions.is_not(None)
    among = (", " + a.data_regions + ", ").like("%, " + code + ", %")  # codes: no wildcards
    branches: list[tuple[Any, Any, Any, Any]] = [
        *_registered_and_active(a, none),  # rules 7 and 1
        (code == a.region, true(), none, code + " is the account's own region"),
        (
            via[ISOLATION_RULE].is_(True),
            false(),
            none,
            f"{ISOLATION_RULE} in "
            + code
            + ": its data centres carry only "
            + code
            + "'s own accounts",
        ),
        (
            and_(paid, chosen, among),
            true(),
            none,
            code + " is among the chosen data regions: " + a.data_regions,
        ),
        (
            and_(paid, chosen),
            false(),
            none,
            code + " is not among the chosen data regions: " + a.data_regions,
        ),
        (
            chosen,
            true(),
            none,
            code + " is not isolated; the chosen data regions apply to paid plans only "
            "(now on the " + a.plan + " plan)",
        ),
        (None, true(), none, code + " is not isolated and no data regions are chosen"),
    ]
    *cases, default = branches
    return tuple(case(*((c[0], c[i]) for c in cases), else_=default[i]) for i in (1, 2, 3))


def _registered_and_active(a: Any, zero: Any) -> list[tuple[Any, Any, Any, Any]]:
    """Rules 7 and 1, first for every capability: (condition, allowed, value, reason)."""
    return [
        (a.not_registered_reason.is_not(None), false(), zero, a.not_registered_reason),
        (
            a.suspension_jurisdiction.is_not(None),
            false(),
            zero,
            "account suspended (jurisdiction "
            + a.suspension_jurisdiction
            + "): "
            + a.suspension_reason,
        ),
    ]


def _blocking_reasons(a: Any, manual_on: Any, rule_on: Any) -> tuple[Any, Any]:
    """The words of a suspended registration and of a revocation (manual, by a rule, or
    both), as `decide` says them."""
    registration = (
        "registration suspended by "
        + a.registration_suspended_rule
        + " in "
        + a.region
        + ", pending sales approval"
    )
    manual = case(
        (a.manual_revocation_reason == "", literal("hosting revoked", String)),
        else_="hosting revoked: " + a.manual_revocation_reason,
    )
    by_rule = "hosting revoked by " + a.rule_revocation_rule + " in " + a.region
    by_rule = by_rule + " while on the free plan"
    revoked = case(
        (and_(manual_on, rule_on), manual + "; " + by_rule),
        (manual_on, manual),
        else_=by_rule,
    )
    return registration, revoked


def _sales_branches(capability: str, a: Any, r: Any) -> list[tuple[Any, Any, Any, Any]]:
    """Rules 4-6 past a suspended registration: partners for a sale through one, else the
    region's channel rule."""
    none = cast(null(), Integer)
    if capability == "purchase_via_partner":  # rule 6
        return [
            (
                r.partners.is_not(None),
                true(),
                none,
                "authorized partners in " + r.region + ": " + r.partners,
            ),
            (None, false(), none, "no authorized partner in " + a.region),
        ]
    rule = CHANNEL_CLOSED_BY["online" if capability == "subscribe_online" else "direct"]  # 4, 5
    return [
        (r[rule].is_(True), false(), none, f"{rule} in " + a.region),
        (None, true(), none, f"{rule} not in force in " + a.region),
    ]


def _decide(capability: str, a: Any, r: Any) -> tuple[ColumnElement[Any], ...]:
    """(allowed, value, reason) of one capability: rules 1-8 as `decide` applies them, in
    the same order, with the same words."""
    limit = capability in LIMIT_CAPABILITIES
    zero = literal(0, Integer) if limit else cast(null(), Integer)
    none = cast(null(), Integer)
    # (condition, allowed, value, reason), first match wins, the last is the default
    pending = a.registration_suspended_rule.is_not(None)
    manual_on = a.manual_revocation_reason.is_not(None)
    rule_on = a.rule_revocation_rule.is_not(None)
    branches = _registered_and_active(a, zero)  # rules 7 and 1
    registration, revoked = _blocking_reasons(a, manual_on, rule_on)
    if capability == "join":  # rule 2
        branches.append((None, true(), none, literal("may join meetings", String)))
    elif capability == "host":  # rule 3
        branches += [
            (pending, false(), none, registration),
            (or_(manual_on, rule_on), false(), none, revoked),
            (None, true(), none, "may host on the " + a.plan + " plan"),
        ]
    elif limit:  # rule 8
        no_limit = "no hosting, so no limit: "
        plan_limit = case(
            *(
                (a.plan == plan, literal(limits[capability], Integer))
                for plan, limits in LIMITS.items()
            ),
            else_=none,
        )
        branches += [
            (pending, false(), zero, no_limit + registration),
            (or_(manual_on, rule_on), false(), zero, no_limit + revoked),
            (None, true(), plan_limit, a.plan + " plan limit"),
        ]
    else:
        branches.append((pending, false(), none, registration))  # rules 4-6
        branches += _sales_branches(capability, a, r)
    assert capability in BOOLEAN_CAPABILITIES or limit
    *cases, default = branches
    return tuple(case(*((c[0], c[i]) for c in cases), else_=default[i]) for i in (1, 2, 3))


def capabilities_now_sql(engine: SqlEngine, tables: ReadModelTables = CURRENT) -> str:
    """CREATE VIEW capabilities_now (what `capability_intervals` holds now, as known now),
    compiled for the engine's dialect; it reads the tables, not the other view."""
    now = (
        func.now()
        if engine.dialect.name == "postgresql"
        else func.strftime("%Y-%m-%d %H:%M:%f", "now")
    )
    compiled = _capabilities(tables, now).compile(engine, compile_kwargs={"literal_binds": True})
    return f"CREATE VIEW capabilities_now AS {compiled}"
