"""The README's analyst queries, run on the china-2020 store after a rebuild, on SQLite and
on PostgreSQL (each in its own form where the SQL differs): each gives what the engine
answers for the same question, so the documentation cannot drift."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.domain.rules import fold_account
from entitlements.domain.times import parse_time
from projections.rebuild import rebuild
from projections.sql_views import sql_engine
from tests.conftest import read_jsonl, scenario_file

README = Path(__file__).resolve().parents[2] / "README.md"
RULE_7 = ("not registered", "registration takes effect")
DIALECTS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def analyst_blocks() -> list[tuple[str, str]]:
    """(first line, SQL) of each ```sql block of the README's section for analysts."""
    text = README.read_text()
    section = text[text.index("## Read models for analysts") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    return [(block.split("\n", 1)[0], block) for block in blocks]


def analyst_queries(dialect: str) -> list[str]:
    """The queries for one database, in order: the blocks whose first line, a comment,
    names it (`-- SQLite`, `-- PostgreSQL`, `-- SQLite and PostgreSQL`)."""
    name = DIALECTS[dialect]
    return [sql for head, sql in analyst_blocks() if name in head.removeprefix("--").split()]


def test_every_block_names_its_database_and_each_query_has_both_forms() -> None:
    heads = [head for head, _ in analyst_blocks()]
    assert all(re.fullmatch(r"-- (SQLite|PostgreSQL|SQLite and PostgreSQL)", h) for h in heads)
    assert len(analyst_queries("sqlite")) == len(analyst_queries("postgresql")) == 5


@pytest.fixture
def china(store_url: str) -> Iterator[tuple[Engine, Connection, list[str]]]:
    """The china-2020 store, rebuilt; a connection to its database; the README's queries
    for that database."""
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        rebuild(engine.app, engine.url)
        sql = sql_engine(engine.url)
        try:
            with sql.connect() as conn:
                yield engine, conn, analyst_queries(sql.dialect.name)
        finally:
            sql.dispose()


def run(conn: Connection, query: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.exec_driver_sql(query).fetchall()]


def day_text(value: Any) -> str:
    """A day as SQLite gives it (text) or PostgreSQL (a date)."""
    return value.isoformat() if isinstance(value, date) else str(value)


def cn_accounts(engine: Engine) -> list[str]:
    return sorted(a for a in engine.facts.accounts if engine.facts.region_of[a] == "CN")


def could_host(engine: Engine, day: date, known: datetime | None) -> dict[str, int]:
    """plan -> CN accounts `check` lets host at 00:00 UTC of `day` as known at `known`."""
    at = datetime.combine(day, time(), UTC)
    counts: dict[str, int] = {}
    for a in cn_accounts(engine):
        if engine.check(a, "host", at=at, as_known_at=known).allowed:
            plan = fold_account(engine.facts.accounts[a], at=at, known=known).plan
            counts[plan] = counts.get(plan, 0) + 1
    return counts


def test_how_many_cn_accounts_could_host_day_by_day(china: Any) -> None:
    engine, conn, queries = china
    rows = [(day_text(d), n) for d, n in run(conn, queries[0])]
    days = ["2020-05-17", "2020-05-18", "2020-05-19", "2020-05-20", "2020-05-21"]
    cn = cn_accounts(engine)
    expected = [(d, sum(engine.check(a, "host", at=d).allowed for a in cn)) for d in days]
    assert rows == expected
    assert [n for _, n in rows] == [3, 3, 2, 2, 2]  # as the README says


def test_what_we_believed_on_20_october_about_1_october(china: Any) -> None:
    engine, conn, queries = china
    rows = [(a, bool(allowed), reason) for a, allowed, reason in run(conn, queries[1])]
    expected = []
    for a in sorted(engine.facts.accounts):
        d = engine.check(a, "host", at="2020-10-01", as_known_at="2020-10-20")
        if not d.reason.startswith(RULE_7):  # before registration the view has no row
            expected.append((a, d.allowed, d.reason))
    assert rows == expected
    assert ("cn-ent-02", True) in {(a, allowed) for a, allowed, _ in rows}  # as the README says


def test_hosting_revoked_by_a_rule_on_1_june(china: Any) -> None:
    engine, conn, queries = china
    rows = run(conn, queries[2])
    june = parse_time("2020-06-01")
    revoked = {  # a state question: the account's rule-caused revocation is in force
        a
        for a, facts in engine.facts.accounts.items()
        if fold_account(facts, at=june).rule_revocation is not None
    }
    assert {a for a, _, _ in rows} == revoked and revoked


def test_cn_accounts_that_could_host_on_1_october_per_plan(china: Any) -> None:
    engine, conn, queries = china
    rows = {plan: int(n) for plan, n in run(conn, queries[3]) if n}
    assert rows == could_host(engine, date(2020, 10, 1), None)
    assert rows  # the question has an answer on this store


def test_the_running_sum_is_the_count_on_every_day_of_2020(china: Any) -> None:
    """Each row is the count on its day; between a plan's rows, the count holds."""
    engine, conn, queries = china
    known = parse_time("2020-10-20")
    from_day: dict[str, dict[date, int]] = {}
    for day, plan, n in run(conn, queries[4]):
        from_day.setdefault(plan, {})[date.fromisoformat(day_text(day))] = int(n)
    assert from_day
    for offset in range(366):
        day = date(2020, 1, 1) + timedelta(days=offset)
        got = {}
        for plan, counts in from_day.items():
            since = [d for d in counts if d <= day]
            if since and counts[max(since)]:
                got[plan] = counts[max(since)]
        assert got == could_host(engine, day, known), day
