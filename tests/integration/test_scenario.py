"""The china-2020 scenario, row by row: what `apply` reports and what checks answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.cli import scenario_path
from entitlements.domain.commands import parse_command_file
from tests.conftest import postgres_or_skip, read_jsonl, scenario_file

APPLY_ROWS = read_jsonl(scenario_file("china-2020.apply.jsonl"))
EXPECTED_ROWS = read_jsonl(scenario_file("china-2020.expected.jsonl"))


def test_the_project_copy_of_the_scenario_matches_the_shared_one() -> None:
    assert scenario_path().read_text() == scenario_file("china-2020.jsonl").read_text()


def applied_scenario(
    kind: str, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[tuple[Engine, list[Any]]]:
    """The scenario file `name` applied once to a fresh store of `kind` (sqlite, postgres),
    for a whole module: its tests only read it (the results, and checks)."""
    folder = tmp_path_factory.mktemp(name)
    url = f"sqlite:///{folder / 'store.db'}" if kind == "sqlite" else postgres_or_skip()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENTITLEMENTS_CACHE", str(folder / "cache"))  # index snapshots
        with open_engine(url) as engine:
            yield engine, engine.apply_parsed(parse_command_file(scenario_file(f"{name}.jsonl")))


def assert_lines(results: list[Any], apply_rows: list[dict[str, Any]]) -> None:
    """Each line applied or rejected as the scenario's `.apply.jsonl` says, with a reason."""
    assert [(r.item, r.status) for r in results] == [
        (row["line"], row["status"]) for row in apply_rows
    ]
    assert all(r.reason for r in results if r.status == "rejected")


def row_id(row: dict[str, Any]) -> str:
    return f"{row['account_id']}-{row['capability']}-{row['at']}-{row.get('as_known_at', 'now')}"


def assert_answer(engine: Engine, row: dict[str, Any]) -> None:
    """The check of an `.expected.jsonl` row answers as it says (`allowed`, or a limit's
    `value`), with a reason, at the log's position."""
    d = engine.check(
        row["account_id"], row["capability"], at=row["at"], as_known_at=row.get("as_known_at")
    )
    if "allowed" in row:
        assert d.allowed is row["allowed"], d.reason
        assert d.value is None
    if "value" in row:
        assert d.value == row["value"], d.reason
        assert d.allowed is (row["value"] > 0)
    assert d.reason
    assert d.position == engine.position()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def applied(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, list[Any]]]:
    yield from applied_scenario(request.param, tmp_path_factory, "china-2020")


def test_every_line_is_applied_or_rejected_as_the_scenario_says(
    applied: tuple[Engine, list[Any]],
) -> None:
    assert_lines(applied[1], APPLY_ROWS)


@pytest.mark.parametrize("row", EXPECTED_ROWS, ids=[row_id(r) for r in EXPECTED_ROWS])
def test_every_expected_answer_holds(
    applied: tuple[Engine, list[Any]], row: dict[str, Any]
) -> None:
    assert_answer(applied[0], row)
