"""`entitlements report`: how many of a region's accounts had a capability on each day, per
plan, as known now or as known at K; as a table, CSV, JSON or a picture.

The counts come from the SQL read model (projections/daily_counts.py: a day is counted at
00:00 UTC); the read models are first brought level with the log, so the report says
what `check` would say at each of those instants.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from rich.table import Table
from sqlalchemy.engine import Connection

from entitlements.domain.rules import (
    CAPABILITIES,
    LIMIT_CAPABILITIES,
    PLANS,
    UnknownCapability,
    check_capability,
    route_via_region,
)
from projections.daily_counts import (
    RuleSwitch,
    counts_per_day,
    day_changes,
    known_region,
    rule_switches,
)
from projections.rebuild import SqlProjection
from projections.sql_views import SqlReadModel, sql_engine

#: The longest range a report covers (five years of days).
MAX_DAYS = 5 * 366
COUNTED_AT = "00:00 UTC of each day"


@dataclass(frozen=True)
class Series:
    """One capability's counts: for each day, each plan's count."""

    capability: str
    days: list[tuple[date, dict[str, int]]]


@dataclass(frozen=True)
class Report:
    region: str
    start: date
    end: date
    as_known_at: datetime | None
    plans: tuple[str, ...]
    series: list[Series]
    switches: list[RuleSwitch]

    def switches_on(self, day: date) -> list[RuleSwitch]:
        return [s for s in self.switches if s.at.date() == day]


def parse_day(value: str, option: str) -> date:
    """A calendar day, YYYY-MM-DD; a bad one is a ValueError naming the option."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{option}: not a date (YYYY-MM-DD): {value[:40]!r}") from None
    if day.year < 1900:
        raise ValueError(f"{option}: before the year 1900: {value[:40]!r}")
    if day == date.max:  # its day's end, where the range stops, is past any date
        raise ValueError(
            f"{option}: the last day a report can cover is {date.max - timedelta(days=1)}"
        )
    return day


def check_range(start: date, end: date) -> None:
    if start > end:
        raise ValueError(f"--from: {start} is after --to {end}")
    if (end - start).days + 1 > MAX_DAYS:
        raise ValueError(
            f"--to: {(end - start).days + 1} days from --from; a report covers at most "
            f"{MAX_DAYS} days (five years)"
        )


def check_capabilities(capabilities: Sequence[str]) -> None:
    for c in capabilities:
        try:
            check_capability(c)
        except UnknownCapability:
            raise ValueError(
                f"--capability: unknown capability {c[:40]!r} ({', '.join(CAPABILITIES)}, "
                "or route_via:R)"
            ) from None


def read_models_level(app: Application[Any], url: str) -> int:
    """Bring the SQL read models level with the log (a catch-up reads what is past their
    position and the streams it touches); returns how many log positions they were behind."""
    with SqlProjection(app, SqlReadModel(sql_engine(url))) as projection:
        projection.model.create()
        head = app.recorder.max_notification_id() or 0
        behind = head - projection.model.position()
        if behind > 0:
            projection.run()
    return max(behind, 0)


def daily_report(
    url: str,
    region: str,
    start: date,
    end: date,
    as_known_at: datetime | None = None,
    capabilities: Sequence[str] = ("host",),
) -> Report:
    """The counts from the read models of the store at `url` (see `read_models_level`)."""
    check_range(start, end)
    check_capabilities(capabilities)
    sql = sql_engine(url)
    try:
        with sql.connect() as conn:
            if not known_region(conn, region):
                raise ValueError(f"region: no account or rule recorded in {region[:40]!r}")
            return report_from(conn, region, start, end, as_known_at, capabilities)
    finally:
        sql.dispose()


def report_from(
    conn: Connection,
    region: str,
    start: date,
    end: date,
    as_known_at: datetime | None,
    capabilities: Sequence[str],
) -> Report:
    """The counts from the read models `conn` reads (a store's, or the what-if's copy of one
    region's: entitlements/application/what_if_counts.py), range and capabilities checked."""
    series = []
    plans = list(PLANS)
    for capability in dict.fromkeys(capabilities):
        changes = day_changes(conn, region, capability, as_known_at, end)
        plans += sorted({c.plan for c in changes} - set(plans))  # none, today
        series.append(Series(capability, counts_per_day(changes, start, end, plans)))
    switches = rule_switches(conn, region, as_known_at, _midnight(start), _midnight(end))
    return Report(region, start, end, as_known_at, tuple(plans), series, switches)


def _midnight(day: date) -> datetime:
    """The end of `day`'s range: switches up to (not including) the next midnight."""
    return datetime.combine(day, time(), UTC) + timedelta(days=1)


def allowed_to(capability: str) -> str:
    """What a count counts, in words ("that may host"; a limit is allowed when above 0)."""
    if capability in LIMIT_CAPABILITIES:
        return f"with {capability} above 0"
    via = route_via_region(capability)
    if via is not None:
        return f"whose meetings may be routed via {via}"
    return f"that may {capability.replace('_', ' ')}"


def _switch_text(s: RuleSwitch) -> str:
    clock = "" if s.at.time() == time() else f" at {s.at:%H:%M}"
    return f"{s.rule} {'on' if s.on else 'lifted'}{clock}"


# -- for people: a table -------------------------------------------------------------------


def as_tables(report: Report) -> list[Table]:
    """One table per capability: a row per day, a column per plan, the total, and the
    region's rule switches that day."""
    known = report.as_known_at.isoformat() if report.as_known_at else "now"
    tables = []
    for s in report.series:
        table = Table(
            title=f"{report.region}: accounts {allowed_to(s.capability)}, per plan, at "
            f"{COUNTED_AT} (as known {'at ' + known if report.as_known_at else known})",
            title_justify="left",
        )
        table.add_column("day")
        for plan in report.plans:
            table.add_column(plan, justify="right")
        table.add_column("total", justify="right")
        table.add_column("rule switches")
        for day, counts in s.days:
            switches = "\n".join(_switch_text(x) for x in report.switches_on(day))
            table.add_row(
                day.isoformat(),
                *(str(counts.get(p, 0)) for p in report.plans),
                str(sum(counts.values())),
                switches,
            )
        tables.append(table)
    return tables


# -- for machines: CSV and JSON ------------------------------------------------------------


def as_csv(report: Report) -> str:
    """day, capability, a column per plan, total, the rule switches of that day."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["day", "capability", *report.plans, "total", "rule_switches"])
    for s in report.series:
        for day, counts in s.days:
            writer.writerow(
                [
                    day.isoformat(),
                    s.capability,
                    *(counts.get(p, 0) for p in report.plans),
                    sum(counts.values()),
                    "; ".join(_switch_text(x) for x in report.switches_on(day)),
                ]
            )
    return buffer.getvalue()


def as_json(report: Report) -> dict[str, Any]:
    return {
        "region": report.region,
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "as_known_at": report.as_known_at.isoformat() if report.as_known_at else None,
        "counted_at": COUNTED_AT,
        "plans": list(report.plans),
        "series": [
            {
                "capability": s.capability,
                "days": [
                    {
                        "day": day.isoformat(),
                        "counts": {p: counts.get(p, 0) for p in report.plans},
                        "total": sum(counts.values()),
                    }
                    for day, counts in s.days
                ],
            }
            for s in report.series
        ],
        "rule_switches": [
            {"effective_at": s.at.isoformat(), "rule": s.rule, "in_force": s.on}
            for s in report.switches
        ],
    }


# -- a picture -----------------------------------------------------------------------------


def plot(report: Report, path: Path) -> None:
    """Counts over time, one panel per capability: each plan a band stacked on the ones
    below (so the top edge is the total); the region's rule switches, as known at K, as
    dashed vertical lines labelled with the rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    n = len(report.series)
    fig, axes = plt.subplots(n, 1, figsize=(11, 4.2 * n + 0.8), sharex=True, squeeze=False)
    known = (
        f"as known at {report.as_known_at:%Y-%m-%d %H:%M} UTC"
        if report.as_known_at
        else "as known now"
    )
    fig.suptitle(
        f"{report.region}: accounts per plan, counted at {COUNTED_AT}, "
        f"{report.start} to {report.end}, {known}",
        fontsize=11,
    )
    palette = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#bab0ac")
    colours = [palette[i % len(palette)] for i in range(len(report.plans))]
    by_time: dict[datetime, list[RuleSwitch]] = {}
    for x in report.switches:
        by_time.setdefault(x.at, []).append(x)
    for ax, s in zip((row[0] for row in axes), report.series, strict=True):
        days = [datetime.combine(d, time(), UTC) for d, _ in s.days]
        days.append(days[-1] + timedelta(days=1))  # the last day's step gets its width
        bands = [[c.get(plan, 0) for _, c in s.days] for plan in report.plans]
        bands = [[*band, band[-1]] for band in bands]
        ax.stackplot(days, *bands, step="post", labels=report.plans, colors=colours, alpha=0.85)
        totals = [sum(column) for column in zip(*bands, strict=True)]
        ax.step(days, totals, where="post", label="total", color="black", lw=1.5)
        ax.set_ylim(0, max([*totals, 1]) * 1.4 + 0.5)
        for i, (at, switches) in enumerate(sorted(by_time.items())):
            ax.axvline(at, color="0.25", ls="--", lw=1)
            ax.annotate(
                "\n".join([f"{at:%d %b}", *(_switch_text(x) for x in switches)]),
                (at, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -4 - 36 * (i % 2)),
                textcoords="offset points",
                va="top",
                fontsize=7.5,
                color="0.15",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        ax.set_ylabel(f"accounts {allowed_to(s.capability)}")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="plan")
        ax.set_xlim(days[0], days[-1])
    last = axes[-1][0]
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    last.xaxis.set_major_locator(locator)
    last.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    last.set_xlabel("day (UTC); dashed lines: a region rule taking effect or lifted")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
