"""A rebuild whose rows another process inserts gives the tables an in-process rebuild
gives, reports its progress as the batches are acknowledged, resumes after a kill with
nothing written twice, and says in one line why the other process stopped; on SQLite and
PostgreSQL."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from entitlements.engine import Engine
from projections import rebuild as rebuild_module
from projections.projector import snapshot_path
from projections.rebuild import rebuild
from projections.rebuild_writer import Shared, Writer, WriterFailed
from projections.snapshot import read_index
from projections.sql_views import SqlReadModel, sql_engine
from tests.integration.test_read_models import (
    all_rows,
    apply_scenario,
    assert_plain_names,
    incremental_rows,
    view_rows,
)
from tests.integration.test_rebuild_parts import the_scenario_and_alike_accounts


@pytest.fixture
def another_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rebuild hands its rows to the writer process, in batches of 3 accounts."""
    monkeypatch.setattr(rebuild_module, "IN_PROCESS_BELOW", 0)
    monkeypatch.setattr(rebuild_module, "ACCOUNTS_PER_TRANSACTION", 3)


def test_rows_written_by_another_process_are_the_in_process_ones(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    the_scenario_and_alike_accounts(engine)  # alike accounts: rows from their kind's recipes
    rebuild(engine.app, store_url)
    in_process, capabilities = all_rows(store_url), view_rows(store_url)
    snapshot = read_index(snapshot_path(store_url))[0]
    monkeypatch.setattr(rebuild_module, "IN_PROCESS_BELOW", 0)
    monkeypatch.setattr(rebuild_module, "ACCOUNTS_PER_TRANSACTION", 3)
    seen: list[tuple[int, int]] = []
    assert rebuild(engine.app, store_url, lambda d, t: seen.append((d, t))) == engine.position()
    assert all_rows(store_url) == in_process == incremental_rows(engine, store_url)
    assert view_rows(store_url) == capabilities
    assert_plain_names(store_url)
    accounts = len(engine.facts.accounts)
    target = engine.position()
    written = [d - target for d, t in seen if t == target + accounts and d > target]
    assert written == [*range(3, accounts, 3), accounts]  # each batch, once acknowledged
    again = read_index(snapshot_path(store_url))[0]
    assert (again.position, again.accounts.keys()) == (snapshot.position, snapshot.accounts.keys())


@pytest.mark.usefixtures("another_process")
def test_a_rebuild_killed_while_another_process_inserts_resumes_exact(
    store_url: str, engine: Engine
) -> None:
    apply_scenario(engine)
    target = engine.position()

    def killed_after_the_first_batch(done: int, total: int) -> None:
        if done > target and total > target:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine.app, store_url, killed_after_the_first_batch)
    half = SqlReadModel(sql_engine(store_url), name="rebuild", suffix="__rebuild")
    written = half.counter("rebuild:accounts")
    accounts = len(engine.facts.accounts)
    assert written in [*range(3, accounts, 3), accounts]  # whole batches only
    with half.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT COUNT(*) FROM accounts__rebuild").scalar()
    assert rows == written  # each batch's rows with its cursor, nothing more
    assert rebuild(engine.app, store_url) == engine.position()
    assert all_rows(store_url) == incremental_rows(engine, store_url)
    assert half.counter("rebuild:accounts") is None


def test_the_other_process_says_why_it_stopped(store_url: str, tmp_path: Path) -> None:
    model = SqlReadModel(sql_engine(store_url), name="rebuild", suffix="__rebuild")
    model.recreate({"rebuild:target": 1})
    writer = Writer(store_url, model)
    try:
        writer.rows(1, [("too", "few")], [], [], {})
        with pytest.raises(WriterFailed, match=r"^\w+: \S") as failed:
            writer.written(wait=True)
        assert "\n" not in str(failed.value).strip()
    finally:
        writer.close()
    assert model.counter("rebuild:accounts") is None  # the failed batch left nothing


def test_shared_values_are_the_same_values_one_object_each() -> None:
    """The pages the other process sends: equal texts and times become one object (pickled
    once), equal instants at other offsets, numbers of other types and dicts stay apart."""
    utc = datetime(2021, 3, 1, 12, tzinfo=UTC)
    plus_one = utc.astimezone(timezone(timedelta(hours=1)))
    assert plus_one == utc

    def record(n: int, at: datetime, data: dict[str, Any]) -> tuple[Any, ...]:
        reason = "".join(["free hosting ", "suspended"])  # a new str object each time
        return (n, f"acc-{n}", "CN", "HostingRevoked", 2, at, at, data, {"why": reason})

    shared = Shared()
    records = [
        record(1, utc, {"n": 1}),
        record(2, datetime(2021, 3, 1, 12, tzinfo=UTC), {"n": True}),
        record(3, plus_one, {"n": 1.0}),
    ]
    got = [shared.record(r) for r in records]
    assert got == records
    assert [type(r[7]["n"]) for r in got] == [int, bool, float]
    assert got[0][5] is got[1][5] is got[1][6] and got[2][5] is plus_one
    assert str(got[2][5]) == str(plus_one)
    assert got[0][8]["why"] is got[2][8]["why"] and got[0][8] is not got[2][8]
    assert len(pickle.dumps(got)) < len(pickle.dumps(records))
