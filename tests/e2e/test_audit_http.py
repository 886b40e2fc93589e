"""The auditors' endpoints over HTTP (FastAPI's TestClient, SQLite and PostgreSQL):
explain and history as known at K, roles, statuses naming the field."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.application.access import open_tokens
from entitlements.http.app import create_app
from tests.conftest import read_jsonl, scenario_file

ROLES = ("checker", "auditor", "admin")
Served = tuple[TestClient, dict[str, dict[str, str]]]


@pytest.fixture
def served(store_url: str) -> Iterator[Served]:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        engine.apply(
            [
                {
                    "command": "revoke_hosting",
                    "account_id": "cn-ent-01",
                    "reason": "[/] <script> :x: end",
                    "actor": "[b]ops[/b]",
                    "effective_at": "2020-11-02",
                    "recorded_at": "2020-11-02",
                }
            ]
        )
    tokens = open_tokens(store_url)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"} for role in ROLES
    }
    with TestClient(create_app(store_url, follow=False), raise_server_exceptions=False) as client:
        yield client, headers


def test_explain_over_http_agrees_with_can(served: Served) -> None:
    client, headers = served
    path = "/v1/accounts/cn-free-01/explain/host"
    r = client.get(path, params={"at": "2020-05-19"}, headers=headers["auditor"])
    assert r.status_code == 200, r.text
    x = r.json()
    can = client.get(
        "/v1/accounts/cn-free-01/can/host", params={"at": "2020-05-19"}, headers=headers["checker"]
    ).json()
    assert (x["allowed"], x["value"], x["reason"]) == (can["allowed"], can["value"], can["reason"])
    (link,) = x["because"]
    assert link["type"] == "HostingRevoked"
    assert link["rule"]["rule"] == "free_hosting_suspended"
    assert link["rule"]["event"]["type"] == "RegionRuleApplied"
    assert x["holds"] == {"since": "2020-05-19T00:00:00Z", "until": None}
    assert x["check_agrees"] is True


def test_explain_needs_the_auditor_role(served: Served) -> None:
    client, headers = served
    path = "/v1/accounts/cn-free-01/explain/host"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=headers["checker"]).status_code == 403
    assert client.get(path, headers=headers["auditor"]).status_code == 200
    assert client.get(path, headers=headers["admin"]).status_code == 200
    history = "/v1/accounts/cn-free-01/history?as_known_at=2020-06-01"
    assert client.get(history, headers=headers["checker"]).status_code == 403


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/v1/accounts/nobody/explain/host", 404, None),
        ("/v1/accounts/cn-free-01/explain/fly", 422, "capability"),
        ("/v1/accounts/cn-free-01/explain/host?at=yesterday", 422, "at"),
        ("/v1/accounts/cn-free-01/explain/host?as_known_at=2020-13-01", 422, "as_known_at"),
        ("/v1/accounts/cn-free-01/explain/host?at=[red]x[/red]", 422, "at"),
        ("/v1/accounts/nobody/history?as_known_at=2020-01-01", 404, None),
        ("/v1/accounts/cn-free-01/history?as_known_at=soon", 422, "as_known_at"),
    ],
)
def test_bad_questions_get_a_status_naming_the_field(
    served: Served, path: str, status: int, field: str | None
) -> None:
    client, headers = served
    r = client.get(path, headers=headers["auditor"])
    assert r.status_code == status, r.text
    body = r.json()
    assert body.get("field") == field and "\n" not in body["detail"]


def test_history_as_known_at_over_http(served: Served) -> None:
    client, headers = served
    plain = client.get("/v1/accounts/cn-pro-01/history", headers=headers["auditor"]).json()
    assert set(plain) == {"account_id", "events"}  # unchanged without as_known_at
    r = client.get(
        "/v1/accounts/cn-pro-01/history",
        params={"as_known_at": "2020-09-05"},
        headers=headers["auditor"],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["command"] for e in body["rejections"]] == ["move_to_partner"]
    assert all(e["recorded_at"] <= "2020-09-05T00:00:00Z" for e in body["entries"])
    assert [e["kind"] for e in body["entries"]][-1] == "rejection"
    positions = [e["position"] for e in body["entries"]]
    assert positions == sorted(positions)
    assert len(body["events"]) < len(plain["events"])  # the October events were not known yet


def test_markup_in_reasons_and_actors_comes_back_as_it_is(served: Served) -> None:
    client, headers = served
    x = client.get(
        "/v1/accounts/cn-ent-01/explain/host",
        params={"at": "2020-12-01"},
        headers=headers["auditor"],
    ).json()
    assert "[/] <script> :x: end" in x["reason"]
    assert x["because"][0]["actor"] == "[b]ops[/b]"
