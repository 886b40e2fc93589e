"""The residency-2020 scenario (DOMAIN.md, "Where a meeting's data may travel"), row by row
on SQLite and PostgreSQL: what `apply` reports, what checks of `route_via:R` answer (at T, as
known at K), and that the isolation fanned out to no account."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entitlements.application.engine import Engine
from entitlements.cli import scenario_path
from tests.conftest import read_jsonl, scenario_file
from tests.integration.test_scenario import applied_scenario, assert_answer, assert_lines, row_id

NAME = "residency-2020"
APPLY_ROWS = read_jsonl(scenario_file(f"{NAME}.apply.jsonl"))
EXPECTED_ROWS = read_jsonl(scenario_file(f"{NAME}.expected.jsonl"))


@pytest.mark.parametrize("part", [".jsonl", ".apply.jsonl", ".expected.jsonl"])
def test_the_project_copy_of_the_scenario_matches_the_shared_one(part: str) -> None:
    ours = scenario_path(NAME).with_name(NAME + part)
    assert ours.read_text() == scenario_file(NAME + part).read_text()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def applied(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, list[Any]]]:
    yield from applied_scenario(request.param, tmp_path_factory, NAME)


def test_every_line_is_applied_or_rejected_as_the_scenario_says(
    applied: tuple[Engine, list[Any]],
) -> None:
    assert_lines(applied[1], APPLY_ROWS)


@pytest.mark.parametrize("row", EXPECTED_ROWS, ids=[row_id(r) for r in EXPECTED_ROWS])
def test_every_expected_answer_holds(
    applied: tuple[Engine, list[Any]], row: dict[str, Any]
) -> None:
    assert_answer(applied[0], row)


def test_the_isolation_is_no_account_event(applied: tuple[Engine, list[Any]]) -> None:
    engine, _ = applied
    for account_id in ("us-free-01", "us-ent-01", "cn-free-r1", "de-pro-01"):
        assert not [e for e in engine.history(account_id) if e["cause"]], account_id
