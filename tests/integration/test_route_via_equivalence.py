"""`route_via:R` answered five ways agrees on random histories (test_equivalence.py's, for
rule 10): random command sequences of test_equivalence's strategy, with data-centre isolations
switched on and off (backdated, and recorded ahead of their time), choices of data regions
(accepted and rejected) and plan changes around them, interleaved by recorded time.

For every account, every `route_via:R` (R in CN, US, DE, HK: isolated or not, with events or
none) and a grid of (T, K) covering every point where an answer can change:

  (a) INCREMENTAL  the engine that applied the commands, one per call;
  (b) REBUILD      a new engine on the same store (index rebuilt from the log);
  (c) SNAPSHOT     a new engine from (b)'s index snapshot: every Decision whole;
  (d) REPLAY       the aggregates from the store, folded and decided by the domain's rules;
  (e) REFERENCE    rule 10 written here from DOMAIN.md, on the raw log's events;
  (f) SQL          the read models caught up incrementally (at random points) equal the
                   rebuilt ones, and the view `capability_intervals` answers as (a), reason
                   included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.application import AggregateNotFoundError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.domain.account import account_uuid
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.region import region_id
from entitlements.domain.rules import decide, fold_account, fold_region
from projections.rebuild import SqlProjection, rebuild
from projections.sql_views import sql_engine
from tests.integration.test_equivalence import (
    ACCOUNT_POOL,
    JUST_BEFORE,
    RefEvent,
    _visible,
    day,
    raw_log_streams,
    scenarios,
    whole,
)
from tests.integration.test_read_models import all_rows
from tests.integration.test_state_intervals import FreshStores, is_rule_7, view_at

VIA = ("CN", "US", "DE", "HK")  # HK: a region with no event of its own
ISOLATED = ("CN", "US", "DE")
ROUTE = tuple(f"route_via:{r}" for r in VIA)


@st.composite
def residency_commands(draw: Any) -> list[dict[str, Any]]:
    """test_equivalence's random sequence, and 3-14 more commands of this part: isolations
    applied and lifted (effective within two months either side of when recorded, or any
    day), choices of 1-3 regions, subscriptions opened and closed around them; all in
    recorded order (a stable merge)."""
    base: list[dict[str, Any]] = draw(scenarios())
    extra = []
    for _ in range(draw(st.integers(3, 14))):
        rec = draw(st.integers(0, 365))
        eff = min(365, max(0, rec + draw(st.integers(-60, 60))))
        if draw(st.integers(0, 3)) == 0:  # or any day of the year
            eff = draw(st.integers(0, 365))
        kind = draw(
            st.sampled_from(
                (
                    "apply_region_rule",
                    "apply_region_rule",
                    "lift_region_rule",
                    "choose_data_regions",
                    "choose_data_regions",
                    "choose_data_regions",
                    "open_subscription",
                    "close_subscription",
                )
            )
        )
        cmd: dict[str, Any] = {"command": kind}
        account = draw(st.sampled_from(ACCOUNT_POOL[:4]))
        if kind in ("apply_region_rule", "lift_region_rule"):
            cmd.update(region=draw(st.sampled_from(ISOLATED)), rule="data_centre_isolated")
        elif kind == "choose_data_regions":
            regions = draw(st.lists(st.sampled_from(VIA), min_size=1, max_size=3, unique=True))
            cmd.update(account_id=account, regions=regions)
        elif kind == "open_subscription":
            plan = draw(st.sampled_from(("pro", "business", "enterprise")))
            cmd.update(account_id=account, plan=plan, channel="direct")
        else:
            cmd.update(account_id=account, reason="lapsed")
        cmd["effective_at"] = day(eff).date().isoformat()
        cmd["recorded_at"] = day(rec).date().isoformat()
        extra.append(cmd)
    return sorted(base + extra, key=lambda c: c["recorded_at"])


def reference(
    account: list[RefEvent], target: list[RefEvent], via: str, at: datetime, known: datetime | None
) -> bool:
    """Rule 10 of DOMAIN.md at (at, known), from the account's raw events and those of the
    region `via` (nothing from the engine's rules)."""
    visible = _visible(account, at, known)
    if not any(e.type == "AccountRegistered" for e in visible):  # rule 7
        return False
    plan, home, suspended, chosen = "free", "", False, None
    for e in visible:
        if e.type == "AccountRegistered":
            plan, home = e.data["plan"], e.data["region"]
        elif e.type in ("SubscriptionOpened", "RegistrationApproved"):
            plan = e.data.get("plan", "enterprise")
        elif e.type == "SubscriptionClosed":
            plan = "free"
        elif e.type in ("AccountSuspended", "AccountReinstated"):
            suspended = e.type == "AccountSuspended"
        elif e.type == "DataRegionsChosen":
            chosen = e.data["regions"]
    if suspended:  # rule 1
        return False
    if via == home:
        return True
    isolated = False
    for e in _visible(target, at, known):
        if e.type.startswith("RegionRule") and e.data["rule"] == "data_centre_isolated":
            isolated = e.type == "RegionRuleApplied"
    if isolated:
        return False
    if plan != "free" and chosen is not None:
        return via in chosen
    return True


@pytest.fixture
def stores(tmp_path: Path) -> FreshStores:
    """A new, empty SQLite store for each example (as test_equivalence's; PostgreSQL runs
    the scenario, the doors and the read models' route_via rows: three engines an example
    would hold too many of a shared server's connections)."""
    return FreshStores(f"sqlite:///{tmp_path / 'unused.db'}")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=residency_commands(), data=st.data())
def test_route_via_agrees_five_ways_and_with_the_sql_view(
    stores: FreshStores, commands: list[dict[str, Any]], data: st.DataObject
) -> None:
    url = stores.new()
    engines: list[Engine] = []
    sql = sql_engine(url)
    try:
        engine = open_engine(url)
        engines.append(engine)
        incremental = SqlProjection.current(engine.app, url)
        catch_up_after = data.draw(st.sets(st.integers(0, len(commands) - 1), max_size=4))
        statuses = []
        for n, cmd in enumerate(commands):
            (result,) = engine.apply([cmd])
            statuses.append((cmd["command"], result.status))
            if n in catch_up_after:
                incremental.run()
        chose = [s for c, s in statuses if c == "choose_data_regions"]
        event(f"choices applied: {'none' if 'applied' not in chose else 'some'}")
        event(f"choices rejected: {'none' if 'rejected' not in chose else 'some'}")
        assert incremental.run() == engine.position()
        caught_up = all_rows(url)
        assert rebuild(engine.app, url) == engine.position()
        assert all_rows(url) == caught_up  # (f) incremental == rebuild

        rebuilt = open_engine(url)
        engines.append(rebuilt)
        rebuilt.projector.save_snapshot()
        from_snapshot = open_engine(url)
        engines.append(from_snapshot)
        streams = raw_log_streams(engine)
        regions = {code: streams.get(region_id(code), []) for code in VIA}
        everything = [e for events in streams.values() for e in events]
        if any(
            e.type.startswith("RegionRule") and e.effective_at < e.recorded_at for e in everything
        ):
            event("a backdated isolation")
        effective = sorted({e.effective_at for e in everything})
        recorded = sorted({e.recorded_at for e in everything})
        times = sorted({day(-1), *effective, *(t - JUST_BEFORE for t in effective)})
        knowns: list[datetime | None] = [
            None,
            *sorted({*recorded, *(k - JUST_BEFORE for k in recorded)}),
        ]
        compared = 0
        for account_id in ACCOUNT_POOL:
            try:
                history = engine.history(account_id)
            except UnknownAccount:
                continue
            aggregate: Any = engine.app.repository.get(account_uuid(account_id))
            raw = streams[account_uuid(account_id)]
            facts = {code: _region_facts(engine, code) for code in VIA}
            assert history
            for t in [*times, datetime.now(UTC)]:
                for k in knowns:
                    acc = fold_account(aggregate.facts, t, k)
                    for via, cap in zip(VIA, ROUTE, strict=True):
                        a = engine.check(account_id, cap, at=t, as_known_at=k)
                        b = rebuilt.check(account_id, cap, at=t, as_known_at=k)
                        c = from_snapshot.check(account_id, cap, at=t, as_known_at=k)
                        assert whole(c) == whole(b), (account_id, cap, t, k)
                        d = decide(cap, acc, fold_region(via, facts[via], t, k))
                        ref = reference(raw, regions[via], via, t, k)
                        answers = {a.allowed, b.allowed, d.allowed, ref}
                        assert len(answers) == 1, (account_id, cap, t, k, a.reason, ref)
                        assert (a.reason, a.because) == (d.reason, d.because)
                        compared += 1
            now = datetime.now(UTC)
            for via, cap in zip(VIA, ROUTE, strict=True):  # the hot "now" path
                assert engine.check(account_id, cap).allowed is reference(
                    raw, regions[via], via, now, None
                )
                assert rebuilt.check(account_id, cap) == from_snapshot.check(account_id, cap)
        event(f"answers compared: {'none (no account registered)' if not compared else 'some'}")
        _view_agrees(sql, engine, times, knowns, data)
    finally:
        sql.dispose()
        for opened in engines:
            opened.close()
        stores.done()


def _region_facts(engine: Engine, code: str) -> list[Any]:
    try:
        return list(engine.app.repository.get(region_id(code)).facts)
    except AggregateNotFoundError:
        return []


def _view_agrees(
    sql: Any,
    engine: Engine,
    times: list[datetime],
    knowns: list[datetime | None],
    data: st.DataObject,
) -> None:
    """(f): at random grid points, the view's route_via rows are the engine's answers
    (allowed, value, reason) for every region the tables know; no row: rule 7."""
    known_regions = {c[len("route_via:") :] for c in (d.capability for d in _any_caps(engine))}
    points = data.draw(
        st.lists(st.tuples(st.sampled_from(times), st.sampled_from(knowns)), max_size=6)
    )
    for at, known in points:
        found = view_at(sql, at, known)
        for account_id in ACCOUNT_POOL:
            if account_id not in engine.facts.accounts:
                continue
            for via in known_regions:
                cap = f"route_via:{via}"
                d = engine.check(account_id, cap, at=at, as_known_at=known)
                rows = found.get((account_id, cap), [])
                where = f"{account_id} {cap} at={at} as_known_at={known}"
                assert len(rows) <= 1, f"{where}: overlapping rows {rows}"
                if rows:
                    assert rows[0] == (d.allowed, d.value, d.reason), where
                else:
                    assert is_rule_7(d.reason), f"{where}: no row, but {d.reason}"


def _any_caps(engine: Engine) -> list[Any]:
    """The capabilities `capabilities` lists for some account (route_via of every region
    the store knows)."""
    account_id = next(iter(engine.facts.accounts), None)
    if account_id is None:  # a history that registers nobody: no row to compare
        return []
    return [d for d in engine.capabilities(account_id) if d.capability.startswith("route_via:")]
