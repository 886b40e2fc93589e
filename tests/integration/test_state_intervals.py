"""The SQL view `capability_intervals` answers what `engine.check` answers, and the narrow
tables it reads are the same whether written incrementally or by a rebuild.

For random command sequences (the strategy of test_equivalence.py: backdated commands,
rules recorded ahead of their time, rule-caused hosting events, rejections), on SQLite and
PostgreSQL:

- the SQL read models are caught up incrementally at random points while the commands go
  in, then once at the end, then rebuilt: `accounts`, `account_state_intervals` and
  `region_state_intervals` hold the same rows both ways;
- at random (T, K) points (event times, just before them, random days, K = everything
  known), for every account and capability, the view has at most one row, and its
  (allowed, value, reason) is `engine.check(account, capability, at=T, as_known_at=K)`'s;
  where it has none, the check says rule 7 (not registered, or not yet known).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine as SqlEngine
from sqlalchemy import and_, or_, select

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.rules import CAPABILITIES
from projections import rebuild as rebuild_module
from projections.rebuild import SqlProjection, rebuild
from projections.sql_views import SqlReadModel, sql_engine
from projections.tables import capability_intervals
from tests.conftest import fresh_postgres_schema
from tests.integration.test_equivalence import ACCOUNT_POOL, STORY, day, scenarios
from tests.integration.test_read_models import all_rows

JUST_BEFORE = timedelta(seconds=1)


def view_at(
    sql: SqlEngine, at: datetime, known: datetime | None
) -> dict[tuple[str, str], list[tuple[bool, Any, str]]]:
    """(account, capability) -> the view's rows holding at (at, known). One SQLAlchemy
    engine per store, not per query: a new engine first asks the server about itself,
    and on PostgreSQL that cost more than the query."""
    i = capability_intervals
    query = select(i.c.account_id, i.c.capability, i.c.allowed, i.c.value, i.c.reason).where(
        i.c.effective_from <= at, or_(i.c.effective_to.is_(None), i.c.effective_to > at)
    )
    if known is None:
        query = query.where(i.c.recorded_to.is_(None))
    else:
        query = query.where(
            and_(
                i.c.recorded_from <= known, or_(i.c.recorded_to.is_(None), i.c.recorded_to > known)
            )
        )
    with sql.connect() as conn:
        rows = conn.execute(query).all()
    found: dict[tuple[str, str], list[tuple[bool, Any, str]]] = {}
    for account_id, capability, allowed, value, reason in rows:
        found.setdefault((account_id, capability), []).append((bool(allowed), value, reason))
    return found


def is_rule_7(reason: str) -> bool:
    return reason == "not registered at that time" or reason.startswith(
        "registration takes effect at "
    )


class FreshStores:
    """A new, empty store of the test's kind for each example (hypothesis runs many)."""

    def __init__(self, kind_url: str) -> None:
        self.postgres = kind_url.startswith("postgresql")
        self.folder: str | None = None

    def new(self) -> str:
        if self.postgres:
            return fresh_postgres_schema()
        self.folder = tempfile.mkdtemp(prefix="state-intervals-")
        return f"sqlite:///{Path(self.folder) / 'entitlements.db'}"

    def done(self) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


@pytest.fixture
def stores(store_url: str) -> FreshStores:
    return FreshStores(store_url)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=scenarios(), data=st.data())
def test_the_view_answers_as_the_engine_and_incremental_equals_rebuild(
    stores: FreshStores, commands: list[dict[str, Any]], data: st.DataObject
) -> None:
    url = stores.new()
    sql = sql_engine(url)
    try:
        with open_engine(url) as engine:
            incremental = SqlProjection.current(engine.app, url)  # kept: reads only what is new
            catch_up_after = data.draw(
                st.sets(st.integers(0, len(commands) - 1), max_size=5), label="catch up after"
            )
            # Or a new process each time, reading the tail and the streams it touches by id
            # (cost 0: never the whole log but at the start), or the whole log when long.
            fresh = data.draw(
                st.sampled_from([None, 0, rebuild_module.STREAM_READ_COST]), label="fresh"
            )
            for n, cmd in enumerate(commands):
                engine.apply([cmd])
                if n in catch_up_after:
                    _catch_up(engine, url, incremental, fresh)
            assert _catch_up(engine, url, incremental, fresh) == engine.position()
            caught_up = all_rows(url)
            assert rebuild(engine.app, url) == engine.position()
            assert all_rows(url) == caught_up

            accounts = []
            for account_id in ACCOUNT_POOL:
                try:
                    history = engine.history(account_id)
                except UnknownAccount:
                    continue
                accounts.append((account_id, history))
            events = [h for _, history in accounts for h in history]
            effective = sorted({datetime.fromisoformat(h["effective_at"]) for h in events})
            recorded = sorted({datetime.fromisoformat(h["recorded_at"]) for h in events})
            times = [*effective, *(t - JUST_BEFORE for t in effective), day(-1), day(400)]
            knowns = [*recorded, *(k - JUST_BEFORE for k in recorded)]
            any_day = st.integers(-1, 366).map(day)
            known_at = st.none() | any_day  # nobody registered: no recorded time of theirs
            if knowns:
                known_at = known_at | st.sampled_from(knowns)
            points = data.draw(
                st.lists(
                    st.tuples(st.sampled_from(times) | any_day, known_at),
                    min_size=5,
                    max_size=12,
                ),
                label="(T, K) points",
            )
            for at, known in points:
                found = view_at(sql, at, known)
                for account_id, _ in accounts:
                    for capability in CAPABILITIES:
                        d = engine.check(account_id, capability, at=at, as_known_at=known)
                        rows = found.get((account_id, capability), [])
                        where = f"{account_id} {capability} at={at} as_known_at={known}"
                        assert len(rows) <= 1, f"{where}: overlapping rows {rows}"
                        if rows:
                            assert rows[0] == (d.allowed, d.value, d.reason), where
                        else:
                            assert not d.allowed and d.value in (None, 0), where
                            assert is_rule_7(d.reason), f"{where}: no row, but {d.reason}"
    finally:
        sql.dispose()
        stores.done()


def _catch_up(engine: Engine, url: str, kept: SqlProjection, fresh: int | None) -> int:
    """Run the kept projection (`fresh` None), or a new one with STREAM_READ_COST `fresh`."""
    if fresh is None:
        return kept.run()
    saved, rebuild_module.STREAM_READ_COST = rebuild_module.STREAM_READ_COST, fresh
    projection = SqlProjection.current(engine.app, url)
    try:
        return projection.run()
    finally:
        rebuild_module.STREAM_READ_COST = saved
        projection.model.engine.dispose()


def test_the_story_in_the_view(stores: FreshStores) -> None:
    """The hand-written story of test_equivalence (every rule, backdating, ties), at every
    effective and recorded time: the view answers as the engine, incremental == rebuild."""
    url = stores.new()
    sql = sql_engine(url)
    try:
        with open_engine(url) as engine:
            for cmd in STORY:
                engine.apply([cmd])
            SqlProjection(engine.app, _current(url)).run()
            caught_up = all_rows(url)
            rebuild(engine.app, url)
            assert all_rows(url) == caught_up
            accounts = [a for a in ACCOUNT_POOL if a in engine.facts.accounts]
            facts = [f for a in accounts for f in engine.facts.accounts[a]]
            facts += [f for fs in engine.facts.regions.values() for f in fs]
            times = sorted({f.effective_at for f in facts} | {day(-1)})
            knowns: list[datetime | None] = [None, *sorted({f.recorded_at for f in facts})]
            compared = 0
            for known in knowns:
                for at in times:
                    found = view_at(sql, at, known)
                    for account_id in accounts:
                        for capability in CAPABILITIES:
                            d = engine.check(account_id, capability, at=at, as_known_at=known)
                            rows = found.get((account_id, capability), [])
                            where = f"{account_id} {capability} at={at} as_known_at={known}"
                            if rows:
                                assert rows == [(d.allowed, d.value, d.reason)], where
                                compared += 1
                            else:
                                assert is_rule_7(d.reason), where
            assert compared > 1000
    finally:
        sql.dispose()
        stores.done()


def _current(url: str) -> SqlReadModel:
    model = SqlReadModel(sql_engine(url))
    model.create()
    return model
