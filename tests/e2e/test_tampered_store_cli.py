"""The command line on a store rewritten behind the engine's back (SQLite and PostgreSQL):
`audit verify` names the row, exit 6, never a traceback (issue 17, items 5 and 6); the
reading commands stop at a row that does not decode with one line naming it and pointing
at `audit verify`, exit 4 (issue 17, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from entitlements import open_engine
from entitlements.application.access import open_tokens
from tests.conftest import StoreCopies, scenario_file
from tests.e2e.test_cli import run
from tests.integration.tamper import Tamper


@pytest.fixture
def china(store_url: str, store_copies: StoreCopies) -> str:
    """A copy of the china-2020 store; each test may edit its own copy."""
    return store_copies.copy(store_url, build_china)


def build_china(store_url: str, _: Path) -> None:
    assert run(store_url, "apply", str(scenario_file("china-2020.jsonl"))).returncode == 1


def replace_in_state(store_url: str, position: int, old: str, new: str) -> None:
    """`UPDATE stored_events SET state = replace(state, old, new)` at an SQL prompt (in
    SQLite the state becomes TEXT; PostgreSQL's goes through text and back to bytea)."""
    with open_engine(store_url) as engine:
        t = Tamper(engine)
        state = (
            "replace(state, ?, ?)"
            if t.sqlite
            else "convert_to(replace(convert_from(state, 'UTF8'), ?, ?), 'UTF8')"
        )
        t.execute(f"UPDATE {{table}} SET state = {state} WHERE {{id}} = ?", old, new, position)


def test_verify_names_a_row_rewritten_with_sql_replace(china: str) -> None:
    replace_in_state(china, 16, "free accounts", "FREE accounts")
    result = run(china, "audit", "verify")
    assert result.returncode == 6, result.stderr
    assert result.stdout.startswith("BROKEN at position 16: edited: position 16 ")
    assert len(result.stdout.splitlines()) == 1 and "Traceback" not in result.stderr


def test_verify_blames_a_copy_appended_at_the_end_not_the_rows_it_copies(china: str) -> None:
    """The issue's report: "BROKEN at position 16: inserted: positions 16..56 are not in the
    chain" for a copy of row 16 appended at 57 (issue 17, item 6)."""
    with open_engine(china) as engine:
        t = Tamper(engine)
        _, stream, version, topic, state = t.row(16)
        t.insert(57, stream, version + 1000, topic, state)
    result = run(china, "audit", "verify")
    assert result.returncode == 6, result.stderr
    assert result.stdout.startswith("BROKEN at position 57: inserted: position 57 is not in")
    assert "record at position 16" in result.stdout


def undecodable(store_url: str, position: int) -> None:
    """The row's state made unreadable: TEXT in SQLite (replace()), bytes that are not a
    record in PostgreSQL (whose bytea column keeps bytes)."""
    if store_url.startswith("sqlite"):
        replace_in_state(store_url, position, "free accounts", "FREE accounts")
        return
    with open_engine(store_url) as engine:
        Tamper(engine).set_column(position, "state", b"\x80 not a record")


@pytest.mark.parametrize(
    "command",
    [
        ["check", "cn-free-01", "host", "--at", "2020-06-01"],
        ["capabilities", "cn-free-01"],
        ["history", "cn-free-01"],
        ["explain", "cn-free-01", "host", "--at", "2020-06-01"],
        ["rejections"],
        ["audit", "jurisdiction", "CN"],
        ["audit", "export", "cn-free-01", "--format", "json"],
        ["rebuild"],
    ],
    ids=lambda c: "-".join(c[:2]),
)
def test_a_reading_command_on_a_damaged_row_says_where_and_exits_4(
    china: str, command: list[str]
) -> None:
    undecodable(china, 16)
    result = run(china, *command)
    assert result.returncode == 4, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("damaged record: the record at position 16 cannot be read ("), last
    assert "`entitlements audit verify`" in last and "Traceback" not in result.stderr
    assert run(china, "audit", "verify").stdout.startswith("BROKEN at position 16: edited:")


def test_a_worker_on_a_damaged_row_answers_one_line_naming_it(china: str) -> None:
    """The worker cannot build its index: 503 (as while starting) with the same line as
    the command line's, not the library's deserialisation error."""
    from fastapi.testclient import TestClient

    from entitlements.http.app import create_app

    undecodable(china, 16)
    auditor = {"Authorization": f"Bearer {open_tokens(china).create('a-v', 'auditor')}"}
    with TestClient(create_app(china, follow=False), raise_server_exceptions=False) as c:
        r = c.get("/v1/accounts/cn-free-01/history", headers=auditor)
    assert r.status_code == 503, r.text
    assert "the record at position 16 cannot be read (" in r.json()["detail"]
    assert "`entitlements audit verify`" in r.json()["detail"]
