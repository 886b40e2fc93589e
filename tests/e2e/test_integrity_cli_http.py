"""`entitlements audit verify` through the installed console script, and
`GET /v1/audit/verify` (SQLite and PostgreSQL): the head and its receipt, exit 6 with one
line at the position of an edit, the same answers as JSON over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.application.access import open_tokens
from entitlements.domain.account import account_uuid
from entitlements.http.app import create_app
from tests.conftest import StoreCopies, scenario_file
from tests.e2e.test_cli import run
from tests.integration.tamper import Tamper


@pytest.fixture
def china(store_url: str, store_copies: StoreCopies) -> str:
    """A copy of the china-2020 store (applied once per module and store kind, through the
    console script); each test may edit its own copy."""
    return store_copies.copy(store_url, build_china)


def build_china(store_url: str, _: Path) -> None:
    assert run(store_url, "apply", str(scenario_file("china-2020.jsonl"))).returncode == 1


def edit_the_revocation(store_url: str) -> int:
    """Move cn-free-01's HostingRevoked to 1 July 2020; returns its position."""
    with open_engine(store_url) as engine:
        t = Tamper(engine)
        uid = account_uuid("cn-free-01")
        at = next(p for p, s, _, topic, _ in t.rows() if s == uid and topic.endswith("Revoked"))
        state = t.row(at)[4]
        t.set_state(at, {**state, "effective_at": datetime(2020, 7, 1, tzinfo=UTC)})
    return at


def test_verify_prints_the_head_and_a_receipt_holds(china: str) -> None:
    result = run(china, "audit", "verify")
    assert result.returncode == 0, result.stderr
    head = result.stdout.splitlines()[-1].removeprefix("head ")
    report = json.loads(run(china, "audit", "verify", "--json").stdout)
    assert report["ok"] and head == f"{report['head']['hash']}@{report['head']['position']}"
    held = run(china, "audit", "verify", "--receipt", head, "--json")
    assert held.returncode == 0 and json.loads(held.stdout)["receipt"]["holds"] is True


def test_an_edit_exits_6_with_one_line_naming_its_position(china: str) -> None:
    receipt = json.loads(run(china, "audit", "verify", "--json").stdout)["head"]
    at = edit_the_revocation(china)
    result = run(china, "audit", "verify")
    assert result.returncode == 6
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"BROKEN at position {at}: edited:")
    as_json = json.loads(run(china, "audit", "verify", "--json").stdout)
    assert as_json["break"]["position"] == at and as_json["break"]["kind"] == "edited"
    r = run(china, "audit", "verify", "--receipt", f"{receipt['hash']}@{receipt['position']}")
    assert r.returncode == 6  # the break is reported first


def test_a_bad_receipt_is_a_usage_error(china: str) -> None:
    result = run(china, "audit", "verify", "--receipt", "nothex@3")
    assert result.returncode == 2 and "receipt" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def client(china: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    tokens = open_tokens(china)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-v', role)}"}
        for role in ("checker", "auditor")
    }
    with TestClient(create_app(china, follow=False), raise_server_exceptions=False) as c:
        yield c, headers


def test_verify_over_http_answers_as_the_cli(
    china: str, client: tuple[TestClient, dict[str, dict[str, str]]]
) -> None:
    c, headers = client
    assert c.get("/v1/audit/verify", headers=headers["checker"]).status_code == 403
    r = c.get("/v1/audit/verify", headers=headers["auditor"])
    assert r.status_code == 200 and r.json() == json.loads(
        run(china, "audit", "verify", "--json").stdout
    )
    head = r.json()["head"]
    receipt = f"{head['hash']}@{head['position']}"
    ok = c.get("/v1/audit/verify", params={"receipt": receipt}, headers=headers["auditor"])
    assert ok.json()["receipt"]["holds"] is True
    bad = c.get("/v1/audit/verify", params={"receipt": "x@1"}, headers=headers["auditor"])
    assert bad.status_code == 422 and bad.json()["field"] == "receipt"
    at = edit_the_revocation(china)
    broken = c.get("/v1/audit/verify", headers=headers["auditor"]).json()
    assert broken["ok"] is False and broken["break"]["position"] == at
