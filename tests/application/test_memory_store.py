"""`memory://`: the store the application tier runs on. It answers as SQLite does (the
china-2020 scenario applied to both, every answer compared), keeps nothing beyond the
engine, and whatever needs a database says so in one line naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entitlements import open_engine
from entitlements.adapters.store import (
    MEMORY_URL,
    StoreError,
    eventsourcing_env,
    store_url,
)
from entitlements.application import access, audit, report
from entitlements.cli.app import run
from entitlements.domain.commands import parse_command_file
from entitlements.domain.rules import CAPABILITIES
from projections.rebuild import SqlProjection, project, rebuild
from projections.sql_views import NoSqlDatabase
from tests.conftest import read_jsonl, scenario_file

EXPECTED_ROWS = read_jsonl(scenario_file("china-2020.expected.jsonl"))


def _story() -> list[Any]:
    """The scenario's commands, each with a command_id of its line: both stores then hold
    the same ids, so their answers compare whole (who asked included)."""
    return [
        (n, cmd.model_copy(update={"command_id": f"line-{n}"}))
        for n, cmd in parse_command_file(scenario_file("china-2020.jsonl"))
    ]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The story applied to memory:// and to an SQLite file (read only by the tests)."""
    folder = tmp_path_factory.mktemp("both")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENTITLEMENTS_CACHE", str(folder / "cache"))
        with (
            open_engine(MEMORY_URL) as memory,
            open_engine(f"sqlite:///{folder / 'store.db'}") as sqlite,
        ):
            yield {
                "engines": (memory, sqlite),
                "results": tuple(e.apply_parsed(_story()) for e in (memory, sqlite)),
            }


def test_the_story_is_applied_and_rejected_line_by_line_as_on_sqlite(
    both: dict[str, Any],
) -> None:
    memory, sqlite = both["results"]
    assert [r.as_dict() for r in memory] == [r.as_dict() for r in sqlite]
    expected = read_jsonl(scenario_file("china-2020.apply.jsonl"))
    assert [(r.item, r.status) for r in memory] == [(e["line"], e["status"]) for e in expected]


def test_every_expected_answer_and_every_capability_is_sqlites(both: dict[str, Any]) -> None:
    memory, sqlite = both["engines"]
    for row in EXPECTED_ROWS:
        args = (row["account_id"], row["capability"], row["at"], row.get("as_known_at"))
        mine, theirs = memory.check(*args), sqlite.check(*args)
        assert mine == theirs, row
        assert (mine.allowed, mine.value) == (
            row.get("allowed", mine.allowed),
            row.get("value", mine.value),
        ), row
        assert [dict(f) for f in mine.because] == [dict(f) for f in theirs.because]
    for account_id in sorted(sqlite.facts.accounts):
        for at in ("2020-01-01", "2020-05-19", "2020-12-31", None):
            assert memory.capabilities(account_id, at) == sqlite.capabilities(account_id, at)


def test_the_logs_histories_rejections_changes_and_audits_are_sqlites(
    both: dict[str, Any],
) -> None:
    memory, sqlite = both["engines"]
    assert memory.position() == sqlite.position()
    for account_id in sorted(sqlite.facts.accounts):
        assert memory.history(account_id) == sqlite.history(account_id)
        assert audit.history(memory, account_id) == audit.history(sqlite, account_id)
        for capability in CAPABILITIES:
            assert audit.explain(memory, account_id, capability, "2020-06-01") == audit.explain(
                sqlite, account_id, capability, "2020-06-01"
            )
    assert memory.rejections() == sqlite.rejections()
    assert memory.changes(0, 1000) == sqlite.changes(0, 1000)
    for region in ("CN", "US"):
        assert audit.jurisdiction(memory, region) == audit.jurisdiction(sqlite, region)
    case = audit.export_case(memory, region="CN")
    assert case["events"] and case["decisions"]
    verified = audit.verify(memory)
    assert verified["ok"] and verified["chained"] == memory.position(), verified


def test_a_memory_store_is_the_engines_own_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with open_engine("memory://") as first, open_engine("memory://") as second:
        first.apply_parsed(_story())
        assert first.reconcile() == 0  # every fan-out completed
        assert first.position() > 0 and second.position() == 0  # two engines, two logs
        assert first.projector.snapshot_file is None
        first.projector.save_snapshot()  # nothing to bind a snapshot to: nothing written
    assert list(tmp_path.iterdir()) == []


def test_memory_is_one_spelling_on_eventsourcings_popo_recorders() -> None:
    assert store_url("memory://") == MEMORY_URL
    assert eventsourcing_env(MEMORY_URL) == {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    for bad in ("memory:///", "memory://x", "memory://?a=b"):
        with pytest.raises(StoreError, match="memory://"):
            store_url(bad)


def test_what_needs_a_database_says_so_in_one_line_naming_memory() -> None:
    with open_engine(MEMORY_URL) as engine:
        engine.apply_parsed(_story())
        asks = (
            lambda: report.read_models_level(engine.app, engine.url),
            lambda: report.daily_report(engine.url, "CN", *report_days()),
            lambda: rebuild(engine.app, engine.url),
            lambda: project(engine.app, engine.url),
            lambda: SqlProjection.current(engine.app, engine.url),
            lambda: access.open_tokens(engine.url),
        )
        for ask in asks:
            with pytest.raises(NoSqlDatabase) as refused:
                ask()
            message = str(refused.value)
            assert message.startswith("memory:// ") and "\n" not in message, message
            assert "sqlite:///path or postgresql://" in message


def report_days() -> tuple[Any, Any]:
    return report.parse_day("2020-01-01", "--from"), report.parse_day("2020-12-31", "--to")


@pytest.mark.parametrize(
    "argv",
    [
        ("check", "cn-free-01", "host"),
        ("apply", "commands.jsonl"),
        ("rebuild",),
        ("serve",),
        ("token", "list"),
    ],
)
def test_the_command_line_and_serve_refuse_memory_in_one_line_exit_2(
    argv: tuple[str, ...],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "commands.jsonl").write_text("")
    for where in ("--db", "env"):
        if where == "env":
            monkeypatch.setenv("ENTITLEMENTS_DB", MEMORY_URL)
            assert run(argv) == 2
        else:
            assert run(["--db", MEMORY_URL, *argv]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("error: memory:// keeps the log in the memory of one process")
        assert "use a path, sqlite:///path or postgresql://" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "commands.jsonl"]
