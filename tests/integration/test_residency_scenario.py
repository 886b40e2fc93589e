"""The residency-2020 scenario (DOMAIN.md, "Where a meeting's data may travel"), row by row
on SQLite and PostgreSQL: what `apply` reports, what checks of `route_via:R` answer (at T, as
known at K), and that the isolation fanned out to no account."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.cli import scenario_path
from entitlements.domain.commands import parse_command_file
from tests.conftest import postgres_or_skip, read_jsonl, scenario_file

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
    """The scenario applied once to a fresh store of each kind; the tests only read it."""
    folder = tmp_path_factory.mktemp("residency")
    url = f"sqlite:///{folder / 'store.db'}" if request.param == "sqlite" else postgres_or_skip()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENTITLEMENTS_CACHE", str(folder / "cache"))  # index snapshots
        with open_engine(url) as engine:
            yield engine, engine.apply_parsed(parse_command_file(scenario_file(f"{NAME}.jsonl")))


def test_every_line_is_applied_or_rejected_as_the_scenario_says(
    applied: tuple[Engine, list[Any]],
) -> None:
    _, results = applied
    assert [(r.item, r.status) for r in results] == [
        (row["line"], row["status"]) for row in APPLY_ROWS
    ]
    assert all(r.reason for r in results if r.status == "rejected")


@pytest.mark.parametrize(
    "row",
    EXPECTED_ROWS,
    ids=[
        f"{r['account_id']}-{r['capability']}-{r['at']}-{r.get('as_known_at', 'now')}"
        for r in EXPECTED_ROWS
    ],
)
def test_every_expected_answer_holds(
    applied: tuple[Engine, list[Any]], row: dict[str, Any]
) -> None:
    engine, _ = applied
    d = engine.check(
        row["account_id"], row["capability"], at=row["at"], as_known_at=row.get("as_known_at")
    )
    assert d.allowed is row["allowed"], d.reason
    assert d.value is None
    assert d.reason
    assert d.position == engine.position()


def test_the_isolation_is_no_account_event(applied: tuple[Engine, list[Any]]) -> None:
    engine, _ = applied
    for account_id in ("us-free-01", "us-ent-01", "cn-free-r1", "de-pro-01"):
        assert not [e for e in engine.history(account_id) if e["cause"]], account_id
