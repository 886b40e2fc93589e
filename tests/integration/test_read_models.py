"""SQL read models: exact, exactly once, resumable, and rebuild == incremental."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Notification, StoredEvent
from sqlalchemy import Table, and_, inspect, or_, select

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.domain.account import account_uuid
from entitlements.domain.commands import parse_command_file
from entitlements.domain.times import parse_time
from projections import log_reader, sql_views
from projections import rebuild as rebuild_module
from projections.projector import Projector, snapshot_path
from projections.rebuild import project, rebuild
from projections.snapshot import read_index
from projections.sql_views import SqlReadModel, sql_engine
from projections.tables import CURRENT, ReadModelTables, capability_intervals, tracking
from tests.conftest import (
    PG_SERVER,
    postgres_available,
    postgres_or_skip,
    postgres_template,
    read_jsonl,
    scenario_file,
)

EXPECTED_ROWS = read_jsonl(scenario_file("china-2020.expected.jsonl"))


def apply_scenario(engine: Engine) -> None:
    engine.apply_parsed(parse_command_file(scenario_file("china-2020.jsonl")))


def answer_from_sql(
    url: str, account_id: str, capability: str, at: datetime, known: datetime | None
) -> tuple[Any, ...] | None:
    i = capability_intervals  # the view over the narrow tables
    query = select(i.c.allowed, i.c.value).where(
        i.c.account_id == account_id,
        i.c.capability == capability,
        i.c.effective_from <= at,
        or_(i.c.effective_to.is_(None), i.c.effective_to > at),
    )
    if known is None:
        query = query.where(i.c.recorded_to.is_(None))
    else:
        query = query.where(
            and_(
                i.c.recorded_from <= known, or_(i.c.recorded_to.is_(None), i.c.recorded_to > known)
            )
        )
    with sql_engine(url).connect() as conn:
        rows = conn.execute(query).all()
    assert len(rows) <= 1, rows
    return tuple(rows[0]) if rows else None  # no row: before the registration (rule 7)


def all_rows(url: str, tables: ReadModelTables = CURRENT) -> set[tuple[Any, ...]]:
    """Every row of a generation's tables, each tagged with its table's kind."""
    kinds: tuple[tuple[str, Table], ...] = (
        ("accounts", tables.accounts),
        ("account_states", tables.account_states),
    )
    kinds += (("region_states", tables.region_states),)
    with sql_engine(url).connect() as conn:
        return {(kind, *r) for kind, table in kinds for r in conn.execute(select(table))}


def view_rows(url: str) -> set[tuple[Any, ...]]:
    """Every row of the `capability_intervals` view."""
    with sql_engine(url).connect() as conn:
        return {tuple(r) for r in conn.execute(select(capability_intervals))}


def incremental_rows(engine: Engine, url: str) -> set[tuple[Any, ...]]:
    """What an incremental catch-up from the start of the log gives, in tables of its own."""
    model = SqlReadModel(sql_engine(url), name="incremental", suffix="__incremental")
    model.create()
    rebuild_module.SqlProjection(engine.app, model).run()
    return all_rows(url, model.tables)


def assert_plain_names(url: str) -> None:
    """Every table, index, primary key and sequence carries the name `define_tables("")`
    gives it: nothing is left named after the rebuild's tables."""
    sql = sql_engine(url)
    found = inspect(sql)
    assert not [t for t in found.get_table_names() if "__rebuild" in t]
    assert {"capability_intervals", "capabilities_now"} <= set(found.get_view_names())
    for table in CURRENT.all:
        assert {ix["name"] for ix in found.get_indexes(table.name)} == {
            ix.name for ix in table.indexes
        }
        pk = found.get_pk_constraint(table.name)["name"]
        has_pk = bool(table.primary_key.columns)
        assert pk == (f"{table.name}_pkey" if has_pk and sql.dialect.name == "postgresql" else None)
    if sql.dialect.name == "postgresql":
        assert not [s for s in found.get_sequence_names() if "__rebuild" in s]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def rebuilt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The scenario applied to a fresh store of each kind and rebuilt, once for the module:
    the row tests only read its tables. On PostgreSQL a database of its own (the module's
    other tests empty this process's database for each test)."""
    folder = tmp_path_factory.mktemp("rebuilt")

    def build(url: str) -> None:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ENTITLEMENTS_CACHE", str(folder / "cache"))
            with open_engine(url) as engine:
                apply_scenario(engine)
                rebuild(engine.app, url)

    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'store.db'}"
        build(url)
        return url
    if postgres_available() is not None:
        postgres_or_skip()  # skips saying why (fails under CI=true)
    return f"{PG_SERVER}/{postgres_template(build)}"


@pytest.mark.parametrize(
    "row",
    EXPECTED_ROWS,
    ids=lambda r: f"{r['account_id']}-{r['capability']}-{r['at']}-{r.get('as_known_at', 'now')}",
)
def test_the_rebuilt_intervals_give_every_scenario_answer(
    rebuilt: str, row: dict[str, Any]
) -> None:
    known = parse_time(row["as_known_at"]) if "as_known_at" in row else None
    answer = answer_from_sql(
        rebuilt, row["account_id"], row["capability"], parse_time(row["at"]), known
    )
    expected_value = row.get("value")
    if answer is None:
        assert row.get("allowed", False) is False and expected_value in (None, 0)
    else:
        assert answer == (row.get("allowed", (expected_value or 0) > 0), expected_value)


def test_incremental_catch_up_after_every_command_equals_a_full_rebuild(
    store_url: str, engine: Engine, tmp_path: Path
) -> None:
    for _, cmd in parse_command_file(scenario_file("china-2020.jsonl")):
        engine.apply_parsed([(1, cmd)])
        project(engine.app, store_url)
    incremental, capabilities = all_rows(store_url), view_rows(store_url)
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == incremental
    assert view_rows(store_url) == capabilities
    assert len(incremental) > 30 and len(capabilities) > 300


def test_a_rebuild_runs_again_and_again(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    project(engine.app, store_url)
    incremental = all_rows(store_url)
    for _ in range(3):
        assert rebuild(engine.app, store_url) == engine.position()
        assert all_rows(store_url) == incremental
        assert_plain_names(store_url)


def test_a_rebuild_starts_clean_whatever_an_earlier_attempt_left(
    store_url: str, engine: Engine
) -> None:
    apply_scenario(engine)
    project(engine.app, store_url)
    incremental = all_rows(store_url)
    sql = sql_engine(store_url)
    with sql.begin() as conn:  # what a rebuild swapped in before names were adopted, and a crash
        conn.exec_driver_sql("DROP INDEX ix_accounts_region")
        conn.exec_driver_sql("CREATE INDEX ix_accounts__rebuild_region ON accounts (region)")
        if sql.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE accounts RENAME CONSTRAINT accounts_pkey TO accounts__rebuild_pkey"
            )
        conn.exec_driver_sql(
            "CREATE TABLE account_state_intervals__rebuild (account_id VARCHAR(64))"
        )
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == incremental
    assert_plain_names(store_url)


def test_a_swap_killed_halfway_changes_nothing(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_scenario(engine)
    project(engine.app, store_url)
    incremental = all_rows(store_url)

    def killed(_: object) -> str:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(sql_views, "capabilities_now_sql", killed)  # after the old tables are dropped
        with pytest.raises(KeyboardInterrupt):
            rebuild(engine.app, store_url)
    with sql_engine(store_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM capabilities_now").scalar()
    assert all_rows(store_url) == incremental
    assert rebuild(engine.app, store_url) == engine.position()
    assert all_rows(store_url) == incremental
    assert_plain_names(store_url)


def test_a_replayed_delivery_changes_nothing(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    position = project(engine.app, store_url)
    before = all_rows(store_url)
    model = SqlReadModel(sql_engine(store_url))
    assert model.write(engine.facts, engine.index, ["cn-free-01", "cn-pro-01"], position) is False
    assert model.write(engine.facts, engine.index, ["cn-free-01"], position - 5) is False
    assert all_rows(store_url) == before and model.position() == position


def test_a_rebuild_killed_halfway_resumes_and_ends_exact(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_scenario(engine)
    project(engine.app, store_url)
    expected = all_rows(store_url)
    target = engine.position()
    monkeypatch.setattr(rebuild_module, "ACCOUNTS_PER_TRANSACTION", 2)
    monkeypatch.setattr(log_reader, "PAGE", 3)

    def die_after_two_transactions(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine.app, store_url, accounts=die_after_two_transactions)
    half = SqlReadModel(sql_engine(store_url), name="rebuild", suffix="__rebuild")
    assert half.counter("rebuild:target") == target
    assert half.counter("rebuild:accounts") == 4  # of 8: two transactions of two accounts
    # Checks and analysts keep answering from the current tables meanwhile.
    assert all_rows(store_url) == expected
    engine.apply(
        [
            {
                "command": "authorize_partner",
                "region": "HK",
                "partner": "P",
                "effective_at": "2021-01-01",
            }
        ]
    )
    assert rebuild(engine.app, store_url) == engine.position()  # resumes, then goes on to the head
    assert all_rows(store_url) == incremental_rows(engine, store_url)
    assert project(engine.app, store_url) == engine.position()  # nothing left to catch up
    assert half.counter("rebuild:accounts") is None  # the rebuild's bookkeeping is gone


def test_a_resumed_rebuild_ends_at_the_head_of_the_log(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_scenario(engine)
    project(engine.app, store_url)
    target = engine.position()
    monkeypatch.setattr(rebuild_module, "ACCOUNTS_PER_TRANSACTION", 2)

    def die_after_one_transaction(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(engine.app, store_url, accounts=die_after_one_transaction)
    results = engine.apply(
        [
            {
                "command": "register_account",
                "account_id": "late-cn",
                "region": "CN",
                "plan": "enterprise",
                "channel": "direct",
                "effective_at": "2020-08-01",
            },
            {
                "command": "register_account",
                "account_id": "late-us",
                "region": "US",
                "plan": "free",
                "channel": "online",
                "effective_at": "2020-09-01",
            },
            {
                "command": "authorize_partner",
                "region": "HK",
                "partner": "P",
                "effective_at": "2021-01-01",
            },
        ]
    )
    assert [r.status for r in results] == ["applied"] * 3
    assert rebuild(engine.app, store_url) == engine.position()
    with sql_engine(store_url).connect() as conn:
        accounts = set(conn.execute(select(CURRENT.accounts.c.account_id)).scalars())
    assert {"late-cn", "late-us"} <= accounts
    assert SqlReadModel(sql_engine(store_url)).position() == engine.position()
    assert all_rows(store_url) == incremental_rows(engine, store_url)
    # The log moved on past the target: the snapshot was saved again, at the head.
    assert read_index(snapshot_path(store_url))[0].position == engine.position() > target


def test_a_second_run_reads_only_the_log_past_its_own_position(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_scenario(engine)
    projection = rebuild_module.SqlProjection.current(engine.app, store_url)
    head = projection.run()
    assert head == engine.position()
    (result,) = engine.apply(
        [
            {
                "command": "register_account",
                "account_id": "late",
                "region": "US",
                "plan": "pro",
                "channel": "online",
                "effective_at": "2020-03-01",
            }
        ]
    )
    assert result.status == "applied"
    starts: list[int] = []
    select_notifications = engine.app.recorder.select_notifications

    def spy(start: int, *args: Any, **kwargs: Any) -> Sequence[Notification]:
        starts.append(start)
        return select_notifications(start, *args, **kwargs)

    monkeypatch.setattr(engine.app.recorder, "select_notifications", spy)
    assert projection.run() == engine.position()
    assert starts and min(starts) == head + 1
    assert projection.run() == engine.position()  # nothing new: nothing read but the end
    assert min(starts) == head + 1
    incremental = all_rows(store_url)
    assert ("accounts", "late", "US", "pro") in {r[:4] for r in incremental}
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == incremental


def spy_reads(m: pytest.MonkeyPatch, engine: Engine) -> tuple[list[int], list[UUID]]:
    """Where each read of the log starts, and which streams are read by id, from now on."""
    starts: list[int] = []
    streams: list[UUID] = []
    recorder = engine.app.recorder
    select_notifications, select_events = recorder.select_notifications, recorder.select_events

    def notifications(start: int, *args: Any, **kwargs: Any) -> Sequence[Notification]:
        starts.append(start)
        return select_notifications(start, *args, **kwargs)

    def events(originator_id: UUID, *args: Any, **kwargs: Any) -> Sequence[StoredEvent]:
        streams.append(originator_id)
        return select_events(originator_id, *args, **kwargs)

    m.setattr(recorder, "select_notifications", notifications)
    m.setattr(recorder, "select_events", events)
    return starts, streams


def test_a_projection_whose_tables_went_back_reads_from_their_position(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_scenario(engine)
    projection = rebuild_module.SqlProjection.current(engine.app, store_url)
    head = projection.run()
    expected = all_rows(store_url)
    with projection.model.engine.begin() as conn:  # as when a rebuild swaps in behind it
        projection.model.track(conn, head - 3)
    starts, _ = spy_reads(monkeypatch, engine)
    assert projection.run() == head
    assert min(starts) == head - 2 and projection.model.position() == head
    assert all_rows(store_url) == expected


def test_a_new_process_reads_only_the_log_past_the_tables_and_the_streams_it_touches(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`catch-up` and `report` make a new projection each time: with nothing new it reads
    nothing; with a few new events, those and, by id, the earlier events of the streams
    they touch, never the log before the tables' position (issue 17: 5.3 s on 170,000
    events with nothing new)."""
    apply_scenario(engine)
    head = project(engine.app, store_url)
    with monkeypatch.context() as m:
        starts, streams = spy_reads(m, engine)
        assert project(engine.app, store_url) == head
    assert starts == [] and streams == []
    revoke = {
        "command": "revoke_hosting",
        "account_id": "us-pro-01",
        "reason": "abuse",
        "effective_at": "2020-12-01",
    }
    late = {
        "command": "register_account",
        "account_id": "late",
        "region": "US",
        "plan": "pro",
        "channel": "online",
        "effective_at": "2020-12-01",
    }
    assert [r.status for r in engine.apply([revoke, late])] == ["applied"] * 2
    with monkeypatch.context() as m:
        starts, streams = spy_reads(m, engine)
        assert project(engine.app, store_url) == engine.position()
    assert min(starts) == head + 1
    assert streams == [account_uuid("us-pro-01")]  # the one stream begun before
    incremental = all_rows(store_url)
    assert ("accounts", "late", "US", "pro") in {r[:4] for r in incremental}
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == incremental


def test_a_long_tail_reads_the_whole_log_once(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past STREAM_READ_COST events of tail per event before it, reading each stream the
    tail touches by id would cost more than the whole log in pages: the log is read."""
    apply_scenario(engine)
    head = project(engine.app, store_url)
    with SqlReadModel(sql_engine(store_url)).engine.begin() as conn:
        SqlReadModel(sql_engine(store_url)).track(conn, head // 2)
    monkeypatch.setattr(rebuild_module, "STREAM_READ_COST", 1)
    with monkeypatch.context() as m:
        starts, streams = spy_reads(m, engine)
        assert project(engine.app, store_url) == head
    assert min(starts) == 1 and streams == []


def test_capabilities_now_is_what_holds_now_as_known_now(store_url: str, engine: Engine) -> None:
    apply_scenario(engine)
    rebuild(engine.app, store_url)
    with sql_engine(store_url).connect() as conn:
        rows = {
            (r.account_id, r.capability): (r.allowed, r.value)
            for r in conn.exec_driver_sql("SELECT * FROM capabilities_now")
        }
    for account in ("cn-free-01", "cn-pro-01", "cn-ent-02", "us-pro-01"):
        for d in engine.capabilities(account):
            assert rows[(account, d.capability)] == (d.allowed, d.value)


def test_a_new_process_starts_from_the_snapshot_and_catches_up(
    store_url: str, engine: Engine
) -> None:
    apply_scenario(engine)
    snapshot_at = rebuild(engine.app, store_url)  # saves the snapshot
    engine.apply(
        [
            {
                "command": "register_account",
                "account_id": "late",
                "region": "CN",
                "plan": "enterprise",
                "channel": "direct",
                "effective_at": "2020-08-01",
            }
        ]
    )
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == snapshot_at
        assert fresh.facts.position == engine.position()
        assert fresh.check("late", "host").allowed is True
        assert fresh.capabilities("cn-free-01", at="2020-06-01") == engine.capabilities(
            "cn-free-01", at="2020-06-01"
        )


def test_a_snapshot_of_another_log_is_ignored(
    store_url: str, engine: Engine, tmp_path: Path
) -> None:
    apply_scenario(engine)
    rebuild(engine.app, store_url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    snapshot_path(other).write_bytes(snapshot_path(store_url).read_bytes())
    with open_engine(other) as e:
        e.apply(
            [
                {
                    "command": "authorize_partner",
                    "region": "CN",
                    "partner": "P",
                    "effective_at": "2020-01-01",
                }
            ]
        )
        projector = Projector(e.app, other)
        assert projector.load_snapshot() is False


def test_a_store_of_the_older_schema_is_upgraded_by_the_next_catch_up(
    store_url: str, engine: Engine
) -> None:
    """Capabilities kept in a `capability_intervals` table (before it became a view): the
    next catch-up drops it, forgets its position and writes every row again."""
    apply_scenario(engine)
    sql = sql_engine(store_url)
    with sql.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE capability_intervals (id INTEGER PRIMARY KEY, account_id VARCHAR(64))"
        )
        conn.exec_driver_sql("CREATE VIEW capabilities_now AS SELECT * FROM capability_intervals")
    with sql.begin() as conn:
        tracking.metadata.create_all(conn)
        SqlReadModel(sql).track(conn, engine.position())  # as if everything were written
    assert project(engine.app, store_url) == engine.position()
    assert {"capability_intervals", "capabilities_now"} <= set(inspect(sql).get_view_names())
    upgraded = all_rows(store_url)
    assert ("accounts", "cn-free-01") in {r[:2] for r in upgraded}
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == upgraded
