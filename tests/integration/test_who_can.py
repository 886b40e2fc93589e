"""Who-can (issue 20, part 2): every listed account's `check` agrees, the count is the
report's, and paging while commands arrive neither skips nor repeats anyone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.application.report import daily_report
from entitlements.application.who_can import Asked, WhoCanPage
from entitlements.domain.rules import CAPABILITIES, PLANS, fold_account
from entitlements.domain.times import parse_when
from projections.rebuild import rebuild
from tests.conftest import read_jsonl, scenario_file
from tests.integration.test_equivalence import scenarios
from tests.integration.test_state_intervals import FreshStores


def walk(engine: Engine, asked: Asked, limit: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Every page of one walk: the accounts listed and each page's position."""
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    cursor = None
    while True:
        page: WhoCanPage = engine.queries.who_can(asked, limit, cursor)
        rows += [r.as_dict() for r in page.rows]
        positions.append(page.position)
        cursor = page.next_cursor
        if cursor is None:
            return rows, positions


def region_accounts(engine: Engine, region: str) -> list[str]:
    return sorted(a for a, r in engine.facts.region_of.items() if r == region)


def plan_of(engine: Engine, account_id: str, at: Any, known: Any) -> str | None:
    """The account's plan at (T, K) folded from its facts (None: not registered then)."""
    state = fold_account(engine.facts.accounts[account_id], at, known)
    return state.plan if state.registration is not None else None


def assert_agrees(engine: Engine, asked: Asked, limit: int) -> None:
    """Allowed and denied split the region's accounts (known at K) in id order, each
    listed with `check`'s own answer and the plan its state has."""
    at = parse_when("at", asked.at)
    known = parse_when("as_known_at", asked.as_known_at)
    allowed, _ = walk(engine, asked, limit)
    denied, _ = walk(engine, Asked(*[*Asked.key(asked)[:5], True]), limit)
    ids = [r["account_id"] for r in allowed + denied]
    assert [r["account_id"] for r in allowed] == sorted(r["account_id"] for r in allowed)
    expected = [
        a
        for a in region_accounts(engine, asked.region)
        if (known is None or min(f.recorded_at for f in engine.facts.accounts[a]) <= known)
        and (asked.plan is None or plan_of(engine, a, at, known) == asked.plan)
    ]
    assert sorted(ids) == expected
    for r in allowed + denied:
        d = engine.check(r["account_id"], asked.capability, at, known)
        assert (r["allowed"], r["value"]) == (d.allowed, d.value), r
        assert r["plan"] == plan_of(engine, r["account_id"], at, known), r
    assert all(r["allowed"] for r in allowed) and not any(r["allowed"] for r in denied)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=scenarios(), data=st.data())
def test_every_listed_account_is_what_check_says(
    store_url: str, commands: list[dict[str, Any]], data: st.DataObject
) -> None:
    stores = FreshStores(store_url)
    url = stores.new()
    try:
        with open_engine(url) as engine:
            engine.apply(commands)
            regions = sorted(set(engine.facts.region_of.values()))
            for region in regions:
                capability = data.draw(st.sampled_from(CAPABILITIES), label="capability")
                day = data.draw(st.integers(-1, 366), label="T day")
                at = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=day)
                known = data.draw(
                    st.none() | st.datetimes(datetime(2020, 1, 1), datetime(2021, 1, 1))
                )
                k = known.replace(tzinfo=UTC) if known else None
                limit = data.draw(st.integers(1, 4), label="limit")
                plan = data.draw(st.none() | st.sampled_from(PLANS), label="plan")
                asked = Asked(
                    capability, region, plan, at.isoformat(), k.isoformat() if k else None
                )
                assert_agrees(engine, asked, limit)
    finally:
        stores.done()


# -- the china-2020 story ----------------------------------------------------------------


@pytest.fixture
def china(store_url: str) -> Any:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        rebuild(engine.app, engine.url)
        yield engine


def test_the_count_is_the_reports_at_midnight(china: Engine) -> None:
    days = [date(2020, 1, 1) + timedelta(days=n) for n in range(0, 366, 3)]
    report = daily_report(china.url, "CN", days[0], days[-1])
    counts = dict(report.series[0].days)
    for day in days:
        rows, _ = walk(china, Asked("host", "CN", at=day.isoformat()), 2)
        assert len(rows) == sum(counts[day].values()), day
        for plan, n in counts[day].items():
            on_plan, _ = walk(china, Asked("host", "CN", plan, day.isoformat()), 3)
            assert len(on_plan) == n, (day, plan)


def test_the_story(china: Engine) -> None:
    """Free hosting stops on 19 May: cn-free-01 moves from allowed to denied."""
    before = walk(china, Asked("host", "CN", at="2020-05-18"), 100)[0]
    after = walk(china, Asked("host", "CN", at="2020-05-20"), 100)[0]
    assert "cn-free-01" in {r["account_id"] for r in before}
    assert "cn-free-01" not in {r["account_id"] for r in after}
    denied = walk(china, Asked("host", "CN", at="2020-05-20", denied=True), 100)[0]
    assert {"account_id": "cn-free-01", "plan": "free", "allowed": False, "value": None} in denied


# -- paging while commands arrive --------------------------------------------------------


def register(account_id: str, plan: str, when: str) -> dict[str, Any]:
    return {
        "command": "register_account",
        "account_id": account_id,
        "region": "CN",
        "plan": plan,
        "channel": "online",
        "effective_at": "2020-01-01",
        "recorded_at": when,
    }


def test_paging_while_commands_arrive_neither_skips_nor_repeats(store_url: str) -> None:
    with open_engine(store_url) as engine:
        engine.apply(
            register(f"a-{n:03d}", ("free", "pro")[n % 2], "2020-01-02") for n in range(0, 60, 2)
        )
        asked = Asked("host", "CN", at="2021-01-01")
        whole = [r.as_dict() for r in engine.queries.who_can(asked, 1000).rows]
        rows, positions = [], []
        cursor = None
        hour = 0
        while True:
            page = engine.queries.who_can(asked, 7, cursor)
            rows += [r.as_dict() for r in page.rows]
            positions.append(page.position)
            cursor = page.next_cursor
            if cursor is None:
                break
            hour += 1  # between pages: new accounts before and after the cursor, a revocation
            when = f"2020-02-01T{hour:02d}:00:00Z"
            last = int(page.rows[-1].account_id[2:])
            engine.apply(
                [
                    register(f"a-{last - 1:03d}", "pro", when),
                    register(f"a-{last + 1:03d}", "pro", when),
                    {
                        "command": "revoke_hosting",
                        "account_id": f"a-{min(last + 4, 58):03d}",
                        "reason": "test",
                        "effective_at": "2020-01-01",
                        "recorded_at": when,
                    },
                ]
            )
        assert rows == whole
        assert len(set(positions)) == 1
        now = [r.as_dict() for r in engine.queries.who_can(asked, 1000).rows]
        assert now != whole  # the store did move


def test_a_command_recorded_at_the_pinned_time_refuses_the_cursor(engine: Engine) -> None:
    engine.apply(register(f"b-{n}", "pro", "2020-01-02") for n in range(4))
    page = engine.queries.who_can(Asked("host", "CN"), 2)
    engine.apply([register("b-0a", "pro", "2020-01-02")])  # the same recorded_at
    with pytest.raises(ValueError, match="^cursor: .*very recorded_at"):
        engine.queries.who_can(Asked("host", "CN"), 2, page.next_cursor)


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "limit", "field"),
    [
        (Asked("hostx", "CN"), 10, "capability"),
        (Asked("host", "XX"), 10, "region"),
        (Asked("host", "CN", at="not-a-time"), 10, "at"),
        (Asked("host", "CN", as_known_at="2020-13-01"), 10, "as_known_at"),
        (Asked("host", "CN"), 0, "limit"),
    ],
)
def test_bad_questions_are_refused_naming_the_field(
    china: Engine, asked: Asked, limit: int, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        china.queries.who_can(asked, limit)


def test_a_tampered_or_foreign_cursor_is_refused(china: Engine) -> None:
    asked = Asked("host", "CN", at="2020-03-10")
    cursor = china.queries.who_can(asked, 1).next_cursor
    assert cursor is not None
    body, mac = cursor.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    for bad in (forged, body + "." + mac[::-1], "x", cursor + "x", "a.b"):
        with pytest.raises(ValueError, match="^cursor: "):
            china.queries.who_can(asked, 1, bad)
    with pytest.raises(ValueError, match="^cursor: made for another question"):
        china.queries.who_can(Asked("join", "CN", at="2020-03-10"), 1, cursor)
    assert china.queries.who_can(asked, 1, cursor).rows  # the genuine one still pages


def test_route_via_is_looked_up_as_check_answers_it(store_url: str) -> None:
    """The residency story (issue 21): who-can takes `route_via:R` as `check` does, for the
    region's own data centres and others', before and after CN's isolation, with and
    without choices, as known then and now."""
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("residency-2020.jsonl")))
        for region in ("US", "DE", "CN"):
            for via in ("CN", "US", "DE", "HK"):
                for at, known in [
                    ("2020-04-17", None),
                    ("2020-04-20", None),
                    ("2020-04-20", "2020-04-13"),
                    ("2020-05-02", None),
                    ("2020-07-02", "2020-06-01"),
                ]:
                    assert_agrees(engine, Asked(f"route_via:{via}", region, None, at, known), 2)
        us_via_cn = walk(engine, Asked("route_via:CN", "US", at="2020-04-20"), 10)[0]
        assert us_via_cn == []  # CN isolated from 18 April: no US account may go through it
