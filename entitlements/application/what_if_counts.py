"""The what-if's picture: one region's daily counts (`entitlements report`'s) in both of the
what-if's histories, the log as it is and the copy with the hypothetical commands.

    counts = region_counts(source.log, target.log, changes, "CN", start, end, known)

`report` counts from the SQL read models (projections/daily_counts.py: a day is counted at
00:00 UTC, per the plan the account had then). The what-if's histories are facts in memory,
so this is the one place that translates: each history's facts of the region (its
accounts' and its own) are written by the read models' own `insert_rows` into an SQLite
database in this process's memory, and `report_from` counts there exactly as `report`
counts in a store. Nothing goes near the store; only the region's rows are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from entitlements.application.report import MAX_DAYS, Report, check_range, report_from
from entitlements.domain.answer_changes import AnswerChange
from entitlements.domain.rules import CAPABILITIES
from projections.facts import LogFacts, TakesEvents
from projections.sql_views import SqlReadModel, sql_engine

#: The in-memory SQLite database one history's rows are counted in (one connection per
#: thread: SQLAlchemy's pool for it keeps the database for as long as the engine lives).
IN_MEMORY = "sqlite://"


@dataclass(frozen=True)
class WhatIfCounts:
    """A region's daily counts before the hypothetical commands and after, over the same
    days, for the capabilities whose answers changed there."""

    region: str
    before: Report
    after: Report


def pick_region(
    changes: Sequence[AnswerChange], asked: str | None, logs: Sequence[TakesEvents]
) -> str:
    """The region asked for (one the store or the copy has an account or a rule in), else
    the one region the changes are in; else a ValueError naming --region."""
    if asked is not None:
        if not any(asked in log.members or log.region_facts(asked) for log in logs):
            raise ValueError(f"--region: no account or rule recorded in {asked[:40]!r}")
        return asked
    regions = sorted({c.region for c in changes})
    if len(regions) == 1:
        return regions[0]
    if not regions:
        raise ValueError("--region: the what-if changes no answer; name the region to draw")
    raise ValueError(
        f"--region: the what-if changes answers in {', '.join(regions)}; name the one to draw"
    )


def capabilities_of(changes: Sequence[AnswerChange], region: str) -> list[str]:
    """The capabilities whose allowed/not flips in the region (a count moves); else those
    whose limit alone changed; else `host`. In the order `check` lists them."""
    mine = [c for c in changes if c.region == region]
    flipped = {c.capability for c in mine if c.before[0] != c.after[0]}
    chosen = flipped or {c.capability for c in mine} or {"host"}
    return [c for c in CAPABILITIES if c in chosen]


def _first_midnight(t: datetime) -> date:
    """The first day whose 00:00 UTC is at or after `t`."""
    t = t.astimezone(UTC)
    return t.date() if t.timetz() == time(tzinfo=UTC) else t.date() + timedelta(days=1)


def _last_midnight(t: datetime) -> date:
    """The last day whose 00:00 UTC is before `t`."""
    return (t.astimezone(UTC) - timedelta(microseconds=1)).date()


def _around(mine: Sequence[AnswerChange]) -> tuple[date, date] | None:
    """The days whose midnight a change covers, with a tenth of their span (at least 3
    days) either side; an open-ended change counts from its first day."""
    if not mine:
        return None
    first = min(_first_midnight(c.start) for c in mine)
    last = max(_first_midnight(c.start) if c.end is None else _last_midnight(c.end) for c in mine)
    last = max(first, last)
    pad = timedelta(days=max(3, (last - first).days // 10))
    return first - pad, last + pad


def days(
    changes: Sequence[AnswerChange], region: str, start: datetime | None, end: datetime | None
) -> tuple[date, date]:
    """The days drawn, both inclusive: those whose 00:00 UTC is in [start, end); a missing
    end is taken from the region's changes (`_around`), at most five years (a report's
    longest) from the first day."""
    around = _around([c for c in changes if c.region == region])
    if around is None:
        if start is None or end is None:
            raise ValueError(
                f"--from: no answer changes in {region} to take the days from; give --from and --to"
            )
        around = (_first_midnight(start), _last_midnight(end))
    first = _first_midnight(start) if start is not None else around[0]
    last = _last_midnight(end) if end is not None else max(around[1], first)
    if start is None:
        first = min(first, last)
    if first > last:
        raise ValueError("--to: no 00:00 UTC in [--from, --to), when the counts are taken")
    if end is None:
        last = min(last, first + timedelta(days=MAX_DAYS - 1))
    check_range(first, last)
    return first, last


def _one_region(log: TakesEvents, region: str) -> LogFacts:
    """The region's facts, and its accounts', as the read models take them."""
    facts = LogFacts()
    facts.position = log.position
    members = list(log.members.get(region, ()))
    facts.members = {region: members}
    facts.regions = {region: list(log.region_facts(region))}
    for account_id in members:
        facts.accounts[account_id] = list(log.account_facts(account_id))
        facts.region_of[account_id] = region
    return facts


def daily_counts(
    log: TakesEvents,
    region: str,
    first: date,
    last: date,
    known: datetime | None,
    capabilities: Sequence[str],
) -> Report:
    """`report REGION --from first --to last --as-known-at known` on one history."""
    facts = _one_region(log, region)
    sql = sql_engine(IN_MEMORY)
    try:
        model = SqlReadModel(sql)
        model.create()
        with sql.begin() as conn:
            model.insert_rows(conn, facts, facts.members[region], [region])
        with sql.connect() as conn:
            return report_from(conn, region, first, last, known, capabilities)
    finally:
        sql.dispose()


def region_counts(
    before: TakesEvents,
    after: TakesEvents,
    changes: Sequence[AnswerChange],
    asked: str | None,
    start: datetime | None,
    end: datetime | None,
    known: datetime | None,
) -> WhatIfCounts:
    """The region's (`asked`, else the one the changes are in) daily counts in both
    histories over [start, end) (default: around the changes), as known at `known`."""
    region = pick_region(changes, asked, (before, after))
    first, last = days(changes, region, start, end)
    capabilities = capabilities_of(changes, region)
    return WhatIfCounts(
        region,
        daily_counts(before, region, first, last, known, capabilities),
        daily_counts(after, region, first, last, known, capabilities),
    )
