"""The daily counts (the view `capability_day_changes`, read by `entitlements report`) are
what `engine.check` says at 00:00 UTC of each day, counted per plan, on SQLite and
PostgreSQL: on the china-2020 store and on random command sequences; the rule switches are
where the region's folded rules change, as known at K."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.application.report import Report, daily_report, read_models_level
from entitlements.domain.events import RULE_SWITCHES
from entitlements.domain.rules import CAPABILITIES, fold_account, fold_region
from entitlements.domain.times import parse_time
from projections.daily_counts import Change, counts_per_day
from projections.rebuild import rebuild
from tests.conftest import read_jsonl, scenario_file
from tests.integration.test_equivalence import scenarios
from tests.integration.test_state_intervals import FreshStores


def midnight(d: date) -> datetime:
    return datetime.combine(d, time(), UTC)


def expected_counts(
    engine: Engine, region: str, capabilities: Sequence[str], d: date, known: datetime | None
) -> dict[str, dict[str, int]]:
    """capability -> plan -> how many of the region's accounts `check` allows at 00:00 UTC
    of `d` as known at `known`, by the plan each one had then (as known then)."""
    counts: dict[str, dict[str, int]] = {c: {} for c in capabilities}
    log = engine.facts  # (made from the index each time it is read: read once)
    for account, facts in log.accounts.items():
        if log.region_of[account] != region:
            continue
        plan = fold_account(facts, at=midnight(d), known=known).plan
        for capability in capabilities:
            if engine.check(account, capability, at=midnight(d), as_known_at=known).allowed:
                counts[capability][plan] = counts[capability].get(plan, 0) + 1
    return counts


def reported(report: Report, capability: str) -> dict[date, dict[str, int]]:
    series = next(s for s in report.series if s.capability == capability)
    return {d: {p: n for p, n in counts.items() if n} for d, counts in series.days}


def expected_switches(
    engine: Engine, region: str, known: datetime | None, start: date, end: date
) -> set[tuple[datetime, str, bool]]:
    """(time, rule, in force after) wherever the folded rules differ just before a rule
    event's effective time and at it, as known at `known`."""
    facts = engine.facts.region_facts(region)
    found = set()
    times = {
        f.effective_at
        for f in facts
        if f.type in RULE_SWITCHES and (known is None or f.recorded_at <= known)
    }
    for t in times:
        if not midnight(start) <= t < midnight(end) + timedelta(days=1):
            continue
        before = fold_region(region, facts, at=t - timedelta(microseconds=1), known=known)
        after = fold_region(region, facts, at=t, known=known)
        for rule in set(before.rules_on) ^ set(after.rules_on):
            found.add((t, rule, rule in after.rules_on))
    return found


def assert_report_is_the_engines(
    engine: Engine,
    region: str,
    days: Iterable[date],
    knowns: Sequence[datetime | None],
    capabilities: Sequence[str] = CAPABILITIES,
) -> None:
    days = sorted(set(days))
    for known in knowns:
        report = daily_report(engine.url, region, days[0], days[-1], known, capabilities)
        assert [d for d, _ in report.series[0].days][0] == days[0]
        got = {capability: reported(report, capability) for capability in capabilities}
        for d in days:
            want = expected_counts(engine, region, capabilities, d, known)
            for capability in capabilities:
                assert got[capability][d] == want[capability], (capability, d, known)
        switches = {(s.at, s.rule, s.on) for s in report.switches}
        assert switches == expected_switches(engine, region, known, days[0], days[-1])


# -- the china-2020 store ------------------------------------------------------------------


@pytest.fixture
def china(store_url: str) -> Any:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        rebuild(engine.app, engine.url)
        yield engine


def test_every_day_of_2020_in_cn_is_what_check_says(china: Engine) -> None:
    year = [date(2020, 1, 1) + timedelta(days=n) for n in range(366)]
    knowns = [None, *map(parse_time, ("2020-05-18", "2020-08-05", "2020-10-20T12:00"))]
    assert_report_is_the_engines(china, "CN", year, knowns)


def test_the_story_shows_in_the_counts(china: Engine) -> None:
    """Free hosting stops on 19 May; cn-ent-02's revocation, recorded on 1 Nov and
    backdated to 15 Sep, lowers September's count as known now, not as known on 20 Oct."""
    sep, oct20 = date(2020, 9, 20), parse_time("2020-10-20")
    now = daily_report(china.url, "CN", date(2020, 5, 18), sep)
    then = daily_report(china.url, "CN", date(2020, 5, 18), sep, as_known_at=oct20)
    first, last = now.series[0].days[0][1], now.series[0].days[-1][1]
    assert first["free"] == 1 and now.series[0].days[1][1]["free"] == 0
    assert then.series[0].days[-1][1]["enterprise"] == last["enterprise"] + 1
    assert ("free_hosting_suspended", True) in {(s.rule, s.on) for s in now.switches}


def test_other_regions_and_a_region_with_no_rules(china: Engine) -> None:
    days = [date(2020, 1, 1) + timedelta(days=n) for n in range(0, 366, 7)]
    for region in ("US", "HK"):
        assert_report_is_the_engines(china, region, days, [None], ("host", "subscribe_online"))


def test_an_unknown_region_is_refused_naming_it(china: Engine) -> None:
    with pytest.raises(ValueError, match="^region: .*'XX'"):
        daily_report(china.url, "XX", date(2020, 1, 1), date(2020, 1, 2))


def test_a_catch_up_keeps_the_counts_level(store_url: str) -> None:
    """Counts read after commands recorded past a rebuild are the engine's, once the read
    models are caught up (the report does it first)."""
    commands = read_jsonl(scenario_file("china-2020.jsonl"))
    with open_engine(store_url) as engine:
        engine.apply(commands[:10])
        rebuild(engine.app, engine.url)
        engine.apply(commands[10:])
        assert read_models_level(engine.app, engine.url) > 0
        assert read_models_level(engine.app, engine.url) == 0
        days = [date(2020, 1, 1) + timedelta(days=n) for n in range(0, 366, 5)]
        assert_report_is_the_engines(engine, "CN", days, [None, parse_time("2020-09-01")])


# -- random stores -------------------------------------------------------------------------


@st.composite
def off_midnight(draw: Any) -> list[dict[str, Any]]:
    """A random command sequence whose effective times are often not a midnight (so a
    change counts from the next day on)."""
    commands: list[dict[str, Any]] = draw(scenarios())
    for cmd in commands:
        if draw(st.booleans()):
            hour, minute = draw(st.integers(0, 23)), draw(st.integers(0, 59))
            cmd["effective_at"] += f"T{hour:02d}:{minute:02d}:00Z"
    return commands


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=off_midnight(), data=st.data())
def test_random_stores_count_what_check_says(
    store_url: str, commands: list[dict[str, Any]], data: st.DataObject
) -> None:
    stores = FreshStores(store_url)
    url = stores.new()
    try:
        with open_engine(url) as engine:
            engine.apply(commands)
            read_models_level(engine.app, engine.url)
            facts = [f for fs in engine.facts.accounts.values() for f in fs]
            facts += [f for r in engine.facts.regions for f in engine.facts.region_facts(r)]
            effective = {f.effective_at.date() for f in facts}
            days = {*effective, *(d + timedelta(days=1) for d in effective)}
            days |= set(data.draw(st.lists(st.dates(date(2019, 12, 1), date(2021, 2, 1)))))
            days.add(date(2019, 12, 31))
            recorded = sorted({f.recorded_at for f in facts})
            knowns: list[datetime | None] = [None]
            if recorded:
                knowns += data.draw(
                    st.lists(st.sampled_from(recorded), max_size=2, unique=True), label="K"
                )
            knowns.append(data.draw(st.datetimes(datetime(2020, 1, 1), datetime(2021, 1, 1))))
            knowns = [k if k is None or k.tzinfo else k.replace(tzinfo=UTC) for k in knowns]
            for region in sorted({*engine.facts.region_of.values(), *engine.facts.regions}):
                assert_report_is_the_engines(engine, region, days, knowns)
    finally:
        stores.done()


# -- the running sum alone -----------------------------------------------------------------


def test_changes_before_the_range_are_where_it_starts() -> None:
    changes = [
        Change("free", date(2020, 1, 1), 2),
        Change("pro", date(2020, 1, 3), 1),
        Change("free", date(2020, 1, 4), -1),
        Change("free", date(2020, 1, 9), 5),
    ]
    rows = counts_per_day(changes, date(2020, 1, 3), date(2020, 1, 5), ("free", "pro"))
    assert rows == [
        (date(2020, 1, 3), {"free": 2, "pro": 1}),
        (date(2020, 1, 4), {"free": 1, "pro": 1}),
        (date(2020, 1, 5), {"free": 1, "pro": 1}),
    ]
