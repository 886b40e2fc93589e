"""`entitlements token create | list | revoke`, through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from entitlements import open_engine
from entitlements.adapters.tokens import Principal
from entitlements.application.access import open_tokens
from tests.e2e.cli_runner import entitlements


def run(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (cli_runner.py)."""
    return entitlements(*args, env={**os.environ, "ENTITLEMENTS_DB": store_url})


def test_create_prints_the_token_once_as_the_last_word_and_it_authenticates(store_url: str) -> None:
    result = run(store_url, "token", "create", "--role", "checker", "--name", "meetings-svc")
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "meetings-svc" in last and "checker" in last
    token = last.split()[-1]
    assert token.startswith("ent_")
    with open_tokens(store_url) as tokens:
        assert tokens.authenticate(token) == Principal("meetings-svc", "checker")
    listed = run(store_url, "token", "list")
    assert listed.returncode == 0 and "meetings-svc" in listed.stdout
    assert token not in listed.stdout + run(store_url, "token", "list", "--json").stdout


def test_create_json_list_json_and_revoke(store_url: str) -> None:
    created = run(
        store_url, "token", "create", "--role", "admin", "--name", "ops@example", "--json"
    )
    assert created.returncode == 0, created.stderr
    body = json.loads(created.stdout)
    assert (
        body["name"] == "ops@example"
        and body["role"] == "admin"
        and body["token"].startswith("ent_")
    )

    listed = json.loads(run(store_url, "token", "list", "--json").stdout)
    assert [(t["name"], t["role"], t["revoked_at"]) for t in listed] == [
        ("ops@example", "admin", None)
    ]
    assert set(listed[0]) == {"name", "role", "created_at", "revoked_at"}

    revoked = run(store_url, "token", "revoke", "ops@example")
    assert revoked.returncode == 0, revoked.stderr
    assert run(store_url, "token", "revoke", "ops@example").returncode == 0  # idempotent
    with open_tokens(store_url) as tokens:
        assert tokens.authenticate(body["token"]) is None
    assert json.loads(run(store_url, "token", "list", "--json").stdout)[0]["revoked_at"]
    assert "revoked" in run(store_url, "token", "list").stdout


def test_revoke_of_an_unknown_name_is_one_line_exit_2(store_url: str) -> None:
    run(store_url, "token", "create", "--role", "auditor", "--name", "audit")
    result = run(store_url, "token", "revoke", "nobody")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "nobody" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_name_in_use_and_a_bad_role_are_refused_in_one_line(store_url: str) -> None:
    assert run(store_url, "token", "create", "--role", "checker", "--name", "svc").returncode == 0
    again = run(store_url, "token", "create", "--role", "admin", "--name", "svc")
    assert again.returncode == 2 and again.stdout == ""
    assert len(again.stderr.strip().splitlines()) == 1 and "already exists" in again.stderr
    bad_role = run(store_url, "token", "create", "--role", "root", "--name", "other")
    assert bad_role.returncode == 2 and "role" in bad_role.stderr
    bad_name = run(store_url, "token", "create", "--role", "checker", "--name", "has space")
    assert (
        bad_name.returncode == 2
        and "name" in bad_name.stderr
        and "Traceback" not in bad_name.stderr
    )


def test_list_and_revoke_need_an_existing_store_create_makes_one(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'typo.db'}"
    for args in (("token", "list"), ("token", "revoke", "x")):
        result = run(missing, *args)
        assert result.returncode == 4 and "does not exist" in result.stderr
    assert not (tmp_path / "typo.db").exists()
    created = run(missing, "token", "create", "--role", "checker", "--name", "first")
    assert created.returncode == 0, created.stderr
    assert "first" in run(missing, "token", "list").stdout


def test_a_store_without_tokens_says_how_to_make_one(store_url: str) -> None:
    with open_engine(store_url):  # a store, no token table yet
        pass
    result = run(store_url, "token", "list")
    assert result.returncode == 0 and "no token yet" in result.stdout
    assert json.loads(run(store_url, "token", "list", "--json").stdout) == []
