"""The analysts' daily counts: how many of a region's accounts, per plan, have a capability
on each day, as known now or as known at K.

A day's count is taken at 00:00 UTC of that day. No row is kept per day and account: each
allowed rectangle [effective_from, effective_to) x [recorded_from, recorded_to) of the
`capability_intervals` view adds +1 on the first midnight at or after `effective_from` and
-1 on the first midnight at or after `effective_to`. The view `capability_day_changes`
holds these changes, so the count on day D as known at K is the sum of the changes on days
<= D whose recorded interval holds K. It is a view over the rebuilt tables: `rebuild` and
`catch-up` keep it level with them, with nothing of its own to write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    exists,
    func,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SqlEngine

from entitlements.domain.rules import REGION_RULES
from entitlements.domain.times import stored_utc
from projections.tables import CURRENT

#: The view's columns, so the report can query it in Core (created by `*_sql` below).
capability_day_changes = Table(
    "capability_day_changes",
    MetaData(),
    Column("region", String(2)),
    Column("plan", String(16)),
    Column("capability", String(32)),
    Column("day", Date),
    Column("change", Integer),
    Column("recorded_from", DateTime(timezone=True)),
    Column("recorded_to", DateTime(timezone=True)),
)

_VIEW = """CREATE VIEW capability_day_changes AS
SELECT region, plan, capability, {start} AS day, 1 AS change, recorded_from, recorded_to
FROM capability_intervals WHERE allowed
UNION ALL
SELECT region, plan, capability, {end} AS day, -1 AS change, recorded_from, recorded_to
FROM capability_intervals WHERE allowed AND effective_to IS NOT NULL"""


def _first_midnight(column: str, dialect: str) -> str:
    """SQL for the first 00:00 UTC at or after `column`, as a date. SQLite keeps UTC text
    ('2020-05-19 00:00:00.000000'): it is a midnight when only zeros follow the date."""
    if dialect == "sqlite":
        return (
            f"CASE WHEN ltrim(substr({column}, 11), ' T0:.') = '' THEN date({column}) "
            f"ELSE date({column}, '+1 day') END"
        )
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN {utc} = date_trunc('day', {utc}) THEN CAST({utc} AS date) "
        f"ELSE CAST({utc} AS date) + 1 END"
    )


def capability_day_changes_sql(engine: SqlEngine) -> str:
    """CREATE VIEW capability_day_changes for the engine's dialect (over the view
    `capability_intervals`, so it decides nothing itself)."""
    name = engine.dialect.name
    return _VIEW.format(
        start=_first_midnight("effective_from", name), end=_first_midnight("effective_to", name)
    )


@dataclass(frozen=True)
class Change:
    """The net change of one plan's count on one day."""

    plan: str
    day: date
    change: int


def day_changes(
    conn: Connection, region: str, capability: str, known: datetime | None, until: date
) -> list[Change]:
    """The region's net changes per plan and day up to `until`, as known at `known` (None:
    as known now). Read where the rows are: one group per plan and day that changed."""
    v = capability_day_changes.c
    belief = (
        [v.recorded_to.is_(None)]
        if known is None
        else [v.recorded_from <= known, (v.recorded_to.is_(None)) | (v.recorded_to > known)]
    )
    query = (
        select(v.plan, v.day, func.sum(v.change))
        .where(v.region == region, v.capability == capability, v.day <= until, *belief)
        .group_by(v.plan, v.day)
        .order_by(v.day, v.plan)
    )
    return [Change(plan, _date(day), int(n)) for plan, day, n in conn.execute(query) if n]


def counts_per_day(
    changes: Iterable[Change], start: date, end: date, plans: Sequence[str]
) -> list[tuple[date, dict[str, int]]]:
    """The running sum of the changes: each day from `start` to `end` (inclusive), with
    every plan's count that day (changes before `start` are the counts it starts from)."""
    counts = dict.fromkeys(plans, 0)
    by_day: dict[date, list[Change]] = {}
    for c in changes:
        if c.day <= start:
            counts[c.plan] = counts.get(c.plan, 0) + c.change
        else:
            by_day.setdefault(c.day, []).append(c)
    rows = []
    day = start
    while day <= end:
        for c in by_day.get(day, ()):
            counts[c.plan] = counts.get(c.plan, 0) + c.change
        rows.append((day, dict(counts)))
        day = date.fromordinal(day.toordinal() + 1)
    return rows


@dataclass(frozen=True)
class RuleSwitch:
    """A region rule coming into force (`on`) or lifted, at an effective time."""

    at: datetime
    rule: str
    on: bool


def rule_switches(
    conn: Connection, region: str, known: datetime | None, start: datetime, end: datetime
) -> list[RuleSwitch]:
    """The region's rule switches taking effect in [start, end), as known at `known`: where
    a rule's flag differs between consecutive rows of `region_state_intervals` (the rows of
    one belief cover effective time without gaps)."""
    r = CURRENT.region_states.c
    belief = (
        [r.recorded_to.is_(None)]
        if known is None
        else [
            (r.recorded_from.is_(None)) | (r.recorded_from <= known),
            (r.recorded_to.is_(None)) | (r.recorded_to > known),
        ]
    )
    rows = conn.execute(
        select(r.effective_from, *(r[rule] for rule in REGION_RULES))
        .where(r.region == region, *belief)
        .order_by(r.effective_from.is_not(None), r.effective_from)
    ).all()
    switches: list[RuleSwitch] = []
    before = dict.fromkeys(REGION_RULES, False)
    for since, *flags in rows:
        now = dict(zip(REGION_RULES, (bool(f) for f in flags), strict=True))
        at = stored_utc(since) if since is not None else None
        for rule in REGION_RULES:
            if now[rule] != before[rule] and at is not None and start <= at < end:
                switches.append(RuleSwitch(at, rule, now[rule]))
        before = now
    return switches


def known_region(conn: Connection, region: str) -> bool:
    """Whether any account or any region event was recorded in `region`."""
    a, r = CURRENT.accounts.c, CURRENT.region_states.c
    query = select(exists().where(a.region == region) | exists().where(r.region == region))
    return bool(conn.execute(query).scalar_one())


def _date(value: Any) -> date:
    """A day as the driver returns it (SQLite: text; PostgreSQL: a date)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
