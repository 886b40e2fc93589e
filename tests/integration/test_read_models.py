"""SQL read models: exact, exactly once, resumable, and rebuild == incremental."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import and_, or_, select

from entitlements import open_engine
from entitlements.commands import parse_command_file, parse_time
from entitlements.engine import Engine
from projections import rebuild as rebuild_module
from projections.rebuild import Projector, project, rebuild, snapshot_path
from projections.sql_views import SqlReadModel, sql_engine
from projections.tables import CURRENT
from tests.conftest import read_jsonl, scenario_file

EXPECTED_ROWS = read_jsonl(scenario_file("china-2020.expected.jsonl"))


def apply_scenario(engine: Engine) -> None:
    engine.apply_parsed(parse_command_file(scenario_file("china-2020.jsonl")))


def answer_from_sql(url: str, account_id: str, capability: str, at: datetime, known: datetime | None):
    i = CURRENT.intervals
    query = select(i.c.allowed, i.c.value).where(
        i.c.account_id == account_id, i.c.capability == capability,
        i.c.effective_from <= at, or_(i.c.effective_to.is_(None), i.c.effective_to > at),
    )
    if known is None:
        query = query.where(i.c.recorded_to.is_(None))
    else:
        query = query.where(and_(i.c.recorded_from <= known, or_(i.c.recorded_to.is_(None), i.c.recorded_to > known)))
    with sql_engine(url).connect() as conn:
        rows = conn.execute(query).all()
    assert len(rows) <= 1, rows
    return tuple(rows[0]) if rows else None  # no row: before the registration (rule 7)


def all_rows(url: str) -> set[tuple]:
    with sql_engine(url).connect() as conn:
        intervals = {tuple(r)[1:] for r in conn.execute(select(CURRENT.intervals))}
        accounts = {tuple(r) for r in conn.execute(select(CURRENT.accounts))}
    return intervals | accounts


@pytest.mark.parametrize("row", EXPECTED_ROWS, ids=lambda r: f"{r['account_id']}-{r['capability']}-{r['at']}-{r.get('as_known_at', 'now')}")
def test_the_rebuilt_intervals_give_every_scenario_answer(store_url: str, engine: Engine, row: dict) -> None:
    apply_scenario(engine)
    rebuild(engine.app, store_url)
    known = parse_time(row["as_known_at"]) if "as_known_at" in row else None
    answer = answer_from_sql(store_url, row["account_id"], row["capability"], parse_time(row["at"]), known)
    expected_value = row.get("value")
    if answer is None:
        assert row.get("allowed", False) is False and expected_value in (None, 0)
    else:
        assert answer == (row.get("allowed", (expected_value or 0) > 0), expected_value)


def test_incremental_catch_up_after_every_command_equals_a_full_rebuild(store_url: str, engine: Engine, tmp_path) -> None:
    for _, cmd in parse_command_file(scenario_file("china-2020.jsonl")):
        engine.apply_parsed([(1, cmd)])
        project(engine.app, store_url)
    incremental = all_rows(store_url)
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == incremental
    assert len(incremental) > 100


def test_a_replayed_delivery_changes_nothing(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    position = project(engine.app, store_url)
    before = all_rows(store_url)
    model = SqlReadModel(sql_engine(store_url))
    assert model.write(engine.facts, engine.index, ["cn-free-01", "cn-pro-01"], position) is False
    assert model.write(engine.facts, engine.index, ["cn-free-01"], position - 5) is False
    assert all_rows(store_url) == before and model.position() == position


def test_a_rebuild_killed_halfway_resumes_and_ends_exact(store_url: str, engine: Engine, monkeypatch) -> None:
    apply_scenario(engine)
    project(engine.app, store_url)
    expected = all_rows(store_url)
    target = engine.position()
    monkeypatch.setattr(rebuild_module, "ACCOUNTS_PER_TRANSACTION", 2)
    monkeypatch.setattr(rebuild_module, "PAGE", 3)

    def die_after_two_transactions(done: int, total: int) -> None:
        if done >= target + 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine.app, store_url, die_after_two_transactions)
    half = SqlReadModel(sql_engine(store_url), name="rebuild", suffix="__rebuild")
    assert half.counter("rebuild:target") == target
    assert half.counter("rebuild:accounts") == 4  # of 8: two transactions of two accounts
    # Checks and analysts keep answering from the current tables meanwhile.
    assert all_rows(store_url) == expected
    engine.apply([{"command": "authorize_partner", "region": "HK", "partner": "P", "effective_at": "2021-01-01"}])
    assert rebuild(engine.app, store_url) == target  # resumes to the same target
    assert all_rows(store_url) == expected
    assert project(engine.app, store_url) == engine.position()  # then catches up as usual
    assert half.counter("rebuild:accounts") is None  # the rebuild's bookkeeping is gone


def test_capabilities_now_is_what_holds_now_as_known_now(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    rebuild(engine.app, store_url)
    with sql_engine(store_url).connect() as conn:
        rows = {(r.account_id, r.capability): (r.allowed, r.value)
                for r in conn.exec_driver_sql("SELECT * FROM capabilities_now")}
    for account in ("cn-free-01", "cn-pro-01", "cn-ent-02", "us-pro-01"):
        for d in engine.capabilities(account):
            assert rows[(account, d.capability)] == (d.allowed, d.value)


def test_a_new_process_starts_from_the_snapshot_and_catches_up(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    rebuild(engine.app, store_url)  # saves the snapshot
    engine.apply([{"command": "register_account", "account_id": "late", "region": "CN", "plan": "enterprise",
                   "channel": "direct", "effective_at": "2020-08-01"}])
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == 28
        assert fresh.facts.position == engine.position()
        assert fresh.check("late", "host").allowed is True
        assert fresh.capabilities("cn-free-01", at="2020-06-01") == engine.capabilities("cn-free-01", at="2020-06-01")


def test_a_snapshot_of_another_log_is_ignored(store_url: str, engine: Engine, tmp_path) -> None:
    apply_scenario(engine)
    rebuild(engine.app, store_url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    snapshot_path(other).write_bytes(snapshot_path(store_url).read_bytes())
    with open_engine(other) as e:
        e.apply([{"command": "authorize_partner", "region": "CN", "partner": "P", "effective_at": "2020-01-01"}])
        projector = Projector(e.app, other)
        assert projector.load_snapshot() is False
