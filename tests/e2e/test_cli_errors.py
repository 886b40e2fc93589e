"""The command line's failure modes, through the installed console script: data that looks
like rich markup, errors on exactly one line, store URLs in every accepted form, a store
that does not exist, and a PostgreSQL server that refuses us."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from entitlements.adapters.store import StoreError, sqlalchemy_url
from entitlements.adapters.store import store_url as canonical
from tests.conftest import scenario_file
from tests.e2e.cli_runner import entitlements


def run(
    db: str | None, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ.pop("ENTITLEMENTS_DEBUG", None)
    db_args = ["--db", db] if db else []
    return entitlements(*db_args, *args, env=environ, cwd=cwd)  # in process: cli_runner.py


PROGRESS = (
    "catch-up ",
    "rebuild ",
)  # a progress bar's last state, printed on stderr before any error


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error, asserting it is exactly one line on stderr and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    error = "".join(
        line for line in result.stderr.splitlines(keepends=True) if not line.startswith(PROGRESS)
    )
    assert error.endswith("\n") and error.count("\n") == 1, repr(result.stderr)
    return error.strip()


def write_lines(path: Path, *lines: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def at(day: str) -> dict[str, str]:
    return {"effective_at": day, "recorded_at": day}


MARKUP_STORE = (
    {"command": "authorize_partner", "region": "CN", "partner": "[/]", **at("2020-01-01")},
    {
        "command": "register_account",
        "account_id": "cn-partner-01",
        "region": "CN",
        "plan": "enterprise",
        "channel": "partner",
        "partner": "[/]",
        **at("2020-01-02"),
    },
    {
        "command": "register_account",
        "account_id": "cn-online-01",
        "region": "CN",
        "plan": "pro",
        "channel": "online",
        **at("2020-01-03"),
    },
    {
        "command": "revoke_hosting",
        "account_id": "cn-online-01",
        "reason": "[/bold] and [red]",
        **at("2020-01-04"),
    },
)


# -- 1. rich markup in data --------------------------------------------------------------


def test_data_that_looks_like_markup_is_printed_as_it_is(store_url: str, tmp_path: Path) -> None:
    applied = run(store_url, "apply", str(write_lines(tmp_path / "markup.jsonl", *MARKUP_STORE)))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for account in ("cn-partner-01", "cn-online-01"):
        for args in (
            ("check", account, "purchase_via_partner"),
            ("check", account, "host"),
            ("capabilities", account),
            ("history", account),
        ):
            result = run(store_url, *args)
            assert result.returncode == 0 and result.stderr == "", (args, result.stderr)
    assert "[/]" in run(store_url, "history", "cn-partner-01").stdout
    assert "[/bold] and [red]" in run(store_url, "history", "cn-online-01").stdout
    assert "[/bold] and [red]" in run(store_url, "check", "cn-online-01", "host").stdout


def test_markup_in_arguments_and_error_messages_is_printed_as_it_is(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    assert run(db, "apply", str(write_lines(tmp_path / "ok.jsonl", *MARKUP_STORE))).returncode == 0

    result = run(db, "check", "[/]", "host")
    assert result.returncode == 3 and "[/]" in one_line_error(result)
    result = run(db, "check", "cn-online-01", "host", "--at", "[red]")
    assert result.returncode == 2 and "[red]" in one_line_error(result)
    result = run(
        db, "capabilities", "cn-online-01", "--at", "2020-02-01", "--as-known-at", "[b]2020[/b]"
    )
    assert result.returncode == 2 and "[b]2020[/b]" in one_line_error(result)

    bad = write_lines(
        tmp_path / "bad.jsonl",
        {"command": "authorize_partner", "region": "CN", "partner": "P", "effective_at": "[/]"},
    )
    result = run(db, "apply", str(bad))
    assert result.returncode == 2 and "[/]" in one_line_error(result)


def test_emoji_codes_in_data_are_not_replaced(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    lines = (
        {
            "command": "register_account",
            "account_id": "a:thumbs_up:",
            "region": "US",
            "plan": "pro",
            "channel": "online",
            **at("2020-01-03"),
        },
    )
    assert run(db, "apply", str(write_lines(tmp_path / "ok.jsonl", *lines))).returncode == 0
    assert "a:thumbs_up:" in run(db, "check", "a:thumbs_up:", "host").stdout


# -- 2. one line, always -----------------------------------------------------------------


def test_a_long_error_is_one_line_never_wrapped(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    bad = write_lines(
        tmp_path / "bad.jsonl",
        {"command": "authorize_partner", "region": "CN", "partner": "P", "effective_at": "x" * 300},
    )
    result = run(db, "apply", str(bad))
    assert result.returncode == 2 and len(one_line_error(result)) > 100
    good = write_lines(tmp_path / "good.jsonl", MARKUP_STORE[0])
    assert run(db, "apply", str(good)).returncode == 0  # the malformed file created no store
    account = "cn-" + "x" * 300
    result = run(db, "check", account, "host")
    assert result.returncode == 3 and account[:60] in one_line_error(result)


def test_a_store_error_is_the_drivers_first_line_without_sql_or_link(
    store_url: str, tmp_path: Path
) -> None:
    assert run(store_url, "apply", str(scenario_file("china-2020.jsonl"))).returncode == 1
    with create_engine(
        sqlalchemy_url(store_url)
    ).begin() as conn:  # a read model of the wrong shape
        conn.execute(text("CREATE TABLE accounts (wrong_column INTEGER)"))
    result = run(store_url, "catch-up")
    assert result.returncode == 4
    line = one_line_error(result)
    assert line.startswith("store error: ")
    assert (
        "SQL" not in line.replace("SQLite", "")
        and "sqlalche.me" not in line
        and "Background" not in line
    )


def test_a_file_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("these are my notes, not a database\n" * 100)
    result = run(str(db), "check", "a", "host")
    assert result.returncode == 4
    assert "not a database" in one_line_error(result)


# -- 3. store URLs -----------------------------------------------------------------------


def test_store_url_has_one_canonical_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENTITLEMENTS_DB", raising=False)
    sqlite = f"sqlite:///{tmp_path}/my.db"
    assert (
        canonical("my.db")
        == canonical("sqlite:///my.db")
        == canonical(f"{tmp_path}/my.db")
        == sqlite
    )
    assert canonical(sqlite) == sqlite and canonical() == f"sqlite:///{tmp_path}/entitlements.db"
    pg = "postgresql://postgres@127.0.0.1:5432/db"
    for url in (
        "postgresql://postgres@127.0.0.1:5432/db",
        "postgresql+psycopg://postgres@127.0.0.1/db",
        "postgres://postgres@127.0.0.1:5432/db",
        "postgresql://127.0.0.1/db",
    ):
        assert canonical(url) == pg
    assert sqlalchemy_url(pg) == "postgresql+psycopg://postgres@127.0.0.1:5432/db"
    for bad in ("mysql://x/y", "sqlite://", "sqlite:///:memory:", ":memory:"):
        with pytest.raises(StoreError):
            canonical(bad)


def test_a_plain_path_is_an_sqlite_store(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    applied = run("my.db", "apply", str(scenario_file("china-2020.jsonl")), cwd=tmp_path / "sub")
    assert applied.returncode == 1, applied.stderr
    assert (tmp_path / "sub" / "my.db").exists()
    for db, cwd, env in (
        ("sub/my.db", tmp_path, None),
        (str(tmp_path / "sub" / "my.db"), None, None),
        ("sqlite:///sub/my.db", tmp_path, None),
        (None, tmp_path, {"ENTITLEMENTS_DB": "sub/my.db"}),
    ):
        result = run(db, "check", "cn-free-01", "join", "--json", cwd=cwd, env=env)
        assert result.returncode == 0, (db, env, result.stderr)
    assert run(str(tmp_path / "sub" / "my.db"), "catch-up").returncode == 0


@pytest.mark.postgres
def test_every_postgresql_spelling_reaches_the_same_store(postgres_url: str) -> None:
    assert run(postgres_url, "apply", str(scenario_file("china-2020.jsonl"))).returncode == 1
    rest = postgres_url.removeprefix("postgresql://")
    for url, read_model in (
        (f"postgresql+psycopg://{rest}", "rebuild"),
        (f"postgres://{rest}", "catch-up"),
    ):
        for args in (("check", "cn-free-01", "join", "--json"), (read_model,), ("reconcile",)):
            result = run(url, *args)
            assert result.returncode == 0, (url, args, result.stderr)


def test_a_url_the_engine_cannot_use_is_one_line(tmp_path: Path) -> None:
    for url in ("mysql://u@h/db", "sqlite:///:memory:"):
        result = run(url, "check", "a", "host")
        assert result.returncode == 2
        assert url in one_line_error(result)


# -- 4. a store that does not exist ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("check", "cn-free-01", "host"),
        ("capabilities", "cn-free-01"),
        ("history", "cn-free-01"),
        ("catch-up",),
        ("rebuild",),
        ("reconcile",),
    ],
)
def test_reading_a_store_that_does_not_exist_says_so_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    typo = tmp_path / "entitlments.db"
    result = run(str(typo), *args)
    assert result.returncode == 4
    line = one_line_error(result)
    assert "does not exist" in line and str(typo) in line
    assert list(tmp_path.iterdir()) == []


def test_apply_into_a_directory_that_does_not_exist_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    result = run(f"sqlite:///{missing}/e.db", "apply", str(scenario_file("china-2020.jsonl")))
    assert result.returncode == 4
    line = one_line_error(result)
    assert "directory does not exist" in line and str(missing) in line and ".lock" not in line
    assert list(tmp_path.iterdir()) == []


# -- 5. PostgreSQL refusing us -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
@pytest.mark.parametrize("mistake", ["database", "port", "user"])
def test_postgresql_says_the_servers_reason_at_once(postgres_url: str, mistake: str) -> None:
    server = postgres_url.rsplit("/", 1)[0]  # postgresql://user@host:port
    url, reason = {
        "database": (f"{server}/nope", 'database "nope" does not exist'),
        "port": (
            f"postgresql://postgres@127.0.0.1:{free_port()}/entitlements_test",
            "connection refused",
        ),
        "user": (
            server.replace("postgres@", "nobody@") + "/entitlements_test",
            'role "nobody" does not exist',
        ),
    }[mistake]
    started = time.monotonic()
    result = run(url, "check", "cn-free-01", "host")
    assert time.monotonic() - started < 3
    assert result.returncode == 4
    assert reason in one_line_error(result).lower()
