"""A rebuild whose rows another process inserts gives the tables an in-process rebuild
gives, reports its progress as the batches are acknowledged, resumes after a kill with
nothing written twice, and says in one line why the other process stopped; on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import inspect, make_url

from entitlements.application.engine import Engine
from projections import rebuild as rebuild_module
from projections import rebuild_read, rebuild_writer
from projections.projector import snapshot_path
from projections.rebuild import project, rebuild
from projections.rebuild_writer import Writer, WriterFailed
from projections.snapshot import read_index
from projections.sql_views import BULK_CHECKPOINT_PAGES, SqlReadModel, checkpoint, sql_engine
from tests.integration.test_read_models import (
    all_rows,
    apply_scenario,
    assert_plain_names,
    incremental_rows,
    view_rows,
)
from tests.integration.test_rebuild_parts import the_scenario_and_alike_accounts


def register_late(engine: Engine) -> None:
    (result,) = engine.apply(
        [
            {
                "command": "register_account",
                "account_id": "late-01",
                "region": "US",
                "plan": "pro",
                "channel": "online",
                "effective_at": "2021-01-01",
            }
        ]
    )
    assert result.status == "applied"


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
    assert (
        rebuild(engine.app, store_url, accounts=lambda d, t: seen.append((d, t)))
        == engine.position()
    )
    assert all_rows(store_url) == in_process == incremental_rows(engine, store_url)
    assert view_rows(store_url) == capabilities
    assert_plain_names(store_url)
    accounts = len(engine.facts.accounts)
    # None yet, then each batch, once acknowledged.
    assert seen == [(d, accounts) for d in (0, *range(3, accounts, 3), accounts)]
    again = read_index(snapshot_path(store_url))[0]
    assert (again.position, again.accounts.keys()) == (snapshot.position, snapshot.accounts.keys())


@pytest.mark.usefixtures("another_process")
def test_a_rebuild_killed_while_another_process_inserts_resumes_exact(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_scenario(engine)

    def killed_before_the_end(*_: Any) -> None:  # every batch sent, some maybe not inserted
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Writer, "end", killed_before_the_end)
        with pytest.raises(KeyboardInterrupt):
            rebuild(engine.app, store_url)
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


@pytest.mark.usefixtures("another_process")
def test_the_tables_the_other_process_swapped_in_stand_if_the_first_dies_then(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap is the other process's: the first killed right after it (before catching
    the tables up), the tables are in place whole, at the target, the rebuild's own gone,
    and the snapshot of the target saved."""
    apply_scenario(engine)
    rebuild(engine.app, store_url)
    expected = incremental_rows(engine, store_url)
    register_late(engine)
    expected_later = incremental_rows(engine, store_url)

    def killed(*_: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(rebuild_module.SqlProjection, "run", killed)
        with pytest.raises(KeyboardInterrupt):
            rebuild(engine.app, store_url)
    assert all_rows(store_url) == expected_later != expected
    assert SqlReadModel(sql_engine(store_url)).position() == engine.position()
    names = set(inspect(sql_engine(store_url)).get_table_names())
    assert not {n for n in names if n.endswith("__rebuild")}
    assert_plain_names(store_url)
    assert read_index(snapshot_path(store_url))[0].position == engine.position()
    assert rebuild(engine.app, store_url) == engine.position()
    assert all_rows(store_url) == expected_later


@pytest.mark.parametrize("processes", ["one", "two"])
def test_a_rebuild_never_swaps_behind_tables_caught_up_meanwhile(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, processes: str
) -> None:
    """A catch-up of the current tables past the rebuild's target while it runs: the swap
    at the target declines; the fresh tables are caught up to the head, then swapped in."""
    if processes == "two":
        monkeypatch.setattr(rebuild_module, "IN_PROCESS_BELOW", 0)
    apply_scenario(engine)
    project(engine.app, store_url)
    read_facts = rebuild_read.read_facts
    target: list[int] = []

    def meanwhile(app: Any, stop: int, *args: Any) -> Any:
        target.append(stop)
        facts = read_facts(app, stop, *args)
        register_late(engine)
        project(engine.app, store_url)  # another process following the log
        return facts

    swaps: list[tuple[int, bool, bool]] = []
    swap = SqlReadModel.swap_into_place

    def spied(model: SqlReadModel, position: int, unless_behind: bool = False) -> bool:
        done = swap(model, position, unless_behind)
        swaps.append((position, unless_behind, done))
        return done

    behind: list[bool] = []
    close = Writer.close

    def closed(writer: Writer) -> None:
        behind.append(not writer.swapped)
        close(writer)

    monkeypatch.setattr(rebuild_module, "read_facts", meanwhile)
    monkeypatch.setattr(SqlReadModel, "swap_into_place", spied)
    monkeypatch.setattr(Writer, "close", closed)
    head = rebuild(engine.app, store_url)
    assert head == engine.position() > target[0]
    assert all_rows(store_url) == incremental_rows(engine, store_url)
    assert SqlReadModel(sql_engine(store_url)).position() == head
    assert_plain_names(store_url)
    if processes == "one":
        assert swaps == [(target[0], True, False), (head, False, True)]
    else:  # the other process declined its swap (in its own process: seen by its flag)
        assert behind == [True] and swaps == [(head, False, True)]


def test_a_swap_unless_behind_changes_nothing_when_behind(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    head = project(engine.app, store_url)
    before = all_rows(store_url)
    fresh = SqlReadModel(sql_engine(store_url), name="rebuild", suffix="__rebuild")
    fresh.recreate({"rebuild:target": head - 1})
    assert fresh.swap_into_place(head - 1, unless_behind=True) is False
    assert all_rows(store_url) == before and fresh.exists()
    assert fresh.counter("rebuild:target") == head - 1
    assert fresh.swap_into_place(head, unless_behind=True) is True  # level: swapped
    assert not fresh.exists() and SqlReadModel(sql_engine(store_url)).position() == head


def test_messages_are_json_of_plain_values_only() -> None:
    """What crosses the pipe is JSON: a row's times go as ISO 8601 text (what COPY reads for
    a timestamptz column, and SQLite's rows hold text already); a value that is not a row's
    (an id, a number type of ours) is refused before it is sent, and reading a message
    makes only texts, numbers, booleans, None, lists and dicts."""
    at = datetime(2020, 9, 15, tzinfo=timezone(timedelta(hours=8)))
    row = ("acc-1", True, 1.5, None, "x\x00<b>", at, 7)
    assert json.loads(rebuild_writer.dumps(["rows", [row]])) == [
        "rows",
        [["acc-1", True, 1.5, None, "x\x00<b>", "2020-09-15T00:00:00+08:00", 7]],
    ]
    for not_plain in (UUID(int=5), Decimal("1.10"), date(2020, 1, 1), b"y"):
        with pytest.raises(TypeError, match="not a plain value"):
            rebuild_writer.dumps([not_plain])


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


def test_a_bulk_load_checkpoints_seldom_then_at_once(store_url: str) -> None:
    """The inserting process's engine lets SQLite's WAL grow between checkpoints, and its
    `checkpoint` leaves nothing in the WAL to copy; other engines keep SQLite's default."""
    bulk, plain = sql_engine(store_url, bulk_load=True), sql_engine(store_url)
    if bulk.dialect.name != "sqlite":
        checkpoint(bulk)  # nothing to do, no error
        return
    with plain.connect() as p:  # as the store's application leaves it
        assert p.exec_driver_sql("PRAGMA journal_mode=WAL").scalar() == "wal"
    with bulk.connect() as b, plain.connect() as p:
        assert b.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == BULK_CHECKPOINT_PAGES
        assert p.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    with bulk.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS bulk_probe (n INTEGER)")
        conn.exec_driver_sql("INSERT INTO bulk_probe VALUES (1)")

    def in_the_database_file() -> bool:  # read past the WAL: what was checkpointed
        path = make_url(store_url).database
        found = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return bool(
                found.execute("SELECT 1 FROM sqlite_master WHERE name = 'bulk_probe'").fetchall()
            )
        finally:
            found.close()

    assert not in_the_database_file()  # in the WAL only, as yet
    checkpoint(bulk)
    assert in_the_database_file()
