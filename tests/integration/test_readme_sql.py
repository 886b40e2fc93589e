"""The README's analyst queries (SQLite), run on the china-2020 store after a rebuild: each
gives what the engine answers for the same question, so the documentation cannot drift."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from entitlements.commands import parse_time
from entitlements.engine import Engine
from entitlements.rules import fold_account
from entitlements.store import sqlite_path
from projections.rebuild import rebuild
from tests.conftest import read_jsonl, scenario_file

README = Path(__file__).resolve().parents[2] / "README.md"
RULE_7 = ("not registered", "registration takes effect")


def analyst_queries() -> list[str]:
    """The ```sql blocks of the README's section for analysts, in order."""
    text = README.read_text()
    section = text[text.index("## Read models for analysts") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


@pytest.fixture
def china_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = Engine(url)
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    rebuild(engine.app, engine.url)
    path = sqlite_path(engine.url)
    assert path is not None
    with sqlite3.connect(path) as db:
        yield engine, db
    engine.close()


def test_the_readme_has_the_three_queries() -> None:
    assert len(analyst_queries()) == 3


def test_how_many_cn_accounts_could_host_day_by_day(china_sqlite: Any) -> None:
    engine, db = china_sqlite
    rows = db.execute(analyst_queries()[0]).fetchall()
    days = ["2020-05-17", "2020-05-18", "2020-05-19", "2020-05-20", "2020-05-21"]
    cn = [a for a in engine.facts.accounts if engine.facts.region_of[a] == "CN"]
    expected = [(d, sum(engine.check(a, "host", at=d).allowed for a in cn)) for d in days]
    assert rows == expected
    assert [n for _, n in rows] == [3, 3, 2, 2, 2]  # as the README says


def test_what_we_believed_on_20_october_about_1_october(china_sqlite: Any) -> None:
    engine, db = china_sqlite
    rows = db.execute(analyst_queries()[1]).fetchall()
    expected = []
    for a in sorted(engine.facts.accounts):
        d = engine.check(a, "host", at="2020-10-01", as_known_at="2020-10-20")
        if not d.reason.startswith(RULE_7):  # before registration the view has no row
            expected.append((a, int(d.allowed), d.reason))
    assert rows == expected
    assert ("cn-ent-02", 1) in {(a, allowed) for a, allowed, _ in rows}  # as the README says


def test_hosting_revoked_by_a_rule_on_1_june(china_sqlite: Any) -> None:
    engine, db = china_sqlite
    rows = db.execute(analyst_queries()[2]).fetchall()
    june = parse_time("2020-06-01")
    revoked = {  # a state question: the account's rule-caused revocation is in force
        a
        for a, facts in engine.facts.accounts.items()
        if fold_account(facts, at=june).rule_revocation is not None
    }
    assert {a for a, _, _ in rows} == revoked and revoked
