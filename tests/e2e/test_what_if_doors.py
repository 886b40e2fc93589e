"""`entitlements what-if` and `POST /v1/what-if` on SQLite and PostgreSQL: the china-2020
question answered, nothing recorded (the store's position and files unchanged), a malformed
file refused whole as `apply` refuses it, a bad time named, the auditor role required."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.application import command_book_file
from entitlements.application.access import open_tokens
from entitlements.http.app import create_app
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.cli_runner import entitlements

EARLIER = {
    "command": "apply_region_rule",
    "region": "CN",
    "rule": "free_hosting_suspended",
    "effective_at": "2020-05-01",
    "recorded_at": "2020-05-01",
}
LOST = {
    ("cn-free-01", cap, "2020-05-01T00:00:00Z", "2020-05-19T00:00:00Z")
    for cap in ("host", "max_participants", "max_meeting_minutes")
}


@pytest.fixture
def china(store_url: str) -> str:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    return store_url


def _files(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix != ".jsonl"
    }


def _position(url: str) -> int:
    with open_engine(url) as engine:
        return engine.position()


def test_cli_answers_the_china_question_and_records_nothing(
    china: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with every snapshot and command book due to be written (SNAPSHOT_EVERY 1): the
    what-if gives its engine none to write."""
    monkeypatch.setattr(command_book_file, "SNAPSHOT_EVERY", 1)
    file = tmp_path / "earlier.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n")
    position, files = _position(china), _files(tmp_path)
    r = entitlements("what-if", str(file), "--json", "--db", china)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert {
        (c["account_id"], c["capability"], c["from"], c["to"]) for c in answer["changes"]
    } == LOST
    assert answer["position"] == position
    assert _files(tmp_path) == files and _position(china) == position
    later = tmp_path / "later.jsonl"  # recorded now: the copy takes the store's index whole
    us = {**EARLIER, "region": "US", "effective_at": "2021-01-01", "recorded_at": None}
    later.write_text(json.dumps(us))
    r = entitlements("what-if", str(later), "--json", "--db", china)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["status"] == "applied"
    assert _files(tmp_path) == files and _position(china) == position
    people = entitlements("what-if", str(file), "--db", china)
    assert people.returncode == 0, people.stderr
    assert "cn-free-01" in people.stdout and "2020-05-19T00:00:00Z" in people.stdout
    assert "nothing recorded" in people.stdout


def test_cli_refuses_a_malformed_file_whole(china: str, tmp_path: Path) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n" + json.dumps({**EARLIER, "rule": "nope"}) + "\n")
    position = _position(china)
    r = entitlements("what-if", str(file), "--db", china)
    assert r.returncode == 2
    assert r.stderr.startswith("malformed: line 2, field 'rule'"), r.stderr
    assert r.stdout == "" and _position(china) == position
    bad = entitlements("what-if", str(file), "--from", "soon", "--db", china)
    assert bad.returncode == 2 and "from:" in bad.stderr


def test_cli_needs_an_existing_store(tmp_path: Path) -> None:
    file = tmp_path / "earlier.jsonl"
    file.write_text(json.dumps(EARLIER) + "\n")
    r = entitlements("what-if", str(file), "--db", str(tmp_path / "typo.db"))
    assert r.returncode != 0 and "does not exist" in r.stderr
    assert not (tmp_path / "typo.db").exists()


@pytest.fixture
def client(china: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    tokens = open_tokens(china)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"}
        for role in ("checker", "auditor")
    }
    with TestClient(create_app(china, follow=False), raise_server_exceptions=False) as c:
        yield c, headers


def test_http_what_if_for_auditors(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    body = {"commands": [EARLIER], "from": "2020-01-01"}
    assert c.post("/v1/what-if", json=body, headers=headers["checker"]).status_code == 403
    r = c.post("/v1/what-if", json=body, headers=headers["auditor"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert {
        (x["account_id"], x["capability"], x["from"], x["to"]) for x in answer["changes"]
    } == LOST
    assert answer["results"][0]["item"] == 1
    bad = c.post(
        "/v1/what-if",
        json={"commands": [EARLIER, {**EARLIER, "effective_at": "x"}]},
        headers=headers["auditor"],
    )
    assert bad.status_code == 422 and "item 2" in bad.text and "effective_at" in bad.text
    late = c.post("/v1/what-if", json={**body, "to": "1999-01-01"}, headers=headers["auditor"])
    assert late.status_code == 422 and "to" in late.text
    odd = c.post("/v1/what-if", json={**body, "until": "x"}, headers=headers["auditor"])
    assert odd.status_code == 422 and "until" in odd.text
    check = c.get("/v1/accounts/cn-free-01/can/host?at=2020-05-10", headers=headers["checker"])
    assert check.json()["allowed"] is True  # nothing recorded
