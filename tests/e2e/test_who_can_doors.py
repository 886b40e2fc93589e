"""`entitlements who-can` and `GET /v1/who-can/{capability}` on the china-2020 store (SQLite
and PostgreSQL): the same pages through both doors, the cursor walked to the end, and
every bad input refused naming its field (exit 2 / 422)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.application.access import open_tokens
from entitlements.http.app import create_app
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.cli_runner import entitlements

Served = tuple[TestClient, dict[str, dict[str, str]], str]


@pytest.fixture
def served(store_url: str) -> Iterator[Served]:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    tokens = open_tokens(store_url)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"}
        for role in ("checker", "auditor", "admin")
    }
    with TestClient(create_app(store_url, follow=False), raise_server_exceptions=False) as client:
        yield client, headers, store_url


def cli_json(url: str, *args: str) -> dict[str, Any]:
    done = entitlements("--db", url, "who-can", *args, "--json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_both_doors_walk_the_same_pages(served: Served) -> None:
    client, headers, url = served
    asked = {"region": "CN", "at": "2020-03-10"}
    pages_http, pages_cli = [], []
    cursor: str | None = None
    while True:
        params = {**asked, "limit": 1, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/who-can/host", params=params, headers=headers["checker"])
        assert r.status_code == 200, r.text
        pages_http.append(r.json())
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    cursor = None
    while True:
        more = ("--cursor", cursor) if cursor else ()
        page = cli_json(url, "host", "--region", "CN", "--at", "2020-03-10", "--limit", "1", *more)
        pages_cli.append(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    listed = [a for p in pages_http for a in p["accounts"]]
    assert listed == [a for p in pages_cli for a in p["accounts"]]
    assert [a["account_id"] for a in listed] == ["cn-ent-01", "cn-free-01", "cn-pro-01"]
    assert {p["position"] for p in pages_http} == {p["position"] for p in pages_cli} == {56}
    # the cursor of one door is good at the other
    first = client.get(
        "/v1/who-can/host", params={**asked, "limit": 1}, headers=headers["checker"]
    ).json()
    second = cli_json(
        url, "host", "--region", "CN", "--at", "2020-03-10", "--limit", "1",
        "--cursor", first["next_cursor"],
    )  # fmt: skip
    assert second["accounts"] == [listed[1]]


def test_the_table_for_people(served: Served) -> None:
    _, _, url = served
    done = entitlements("--db", url, "who-can", "host", "--region", "CN", "--at", "2020-05-20")
    assert done.returncode == 0, done.stderr
    assert "cn-ent-01" in done.stdout and "enterprise" in done.stdout
    assert "cn-free-01" not in done.stdout and "the last page" in done.stdout
    denied = entitlements(
        "--db", url, "who-can", "host", "--region", "CN", "--at", "2020-05-20", "--denied",
        "--limit", "1",
    )  # fmt: skip
    assert "cn-ent-02" in denied.stdout and "next page: --cursor " in denied.stdout
    free = entitlements(
        "--db", url, "who-can", "host", "--region", "CN", "--at", "2020-05-20", "--denied",
        "--plan", "free",
    )  # fmt: skip
    assert "cn-free-01" in free.stdout and "cn-ent-02" not in free.stdout


def test_a_checker_may_ask(served: Served) -> None:
    client, headers, _ = served
    path = "/v1/who-can/host?region=CN"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=headers["checker"]).status_code == 200
    assert client.get(path, headers=headers["auditor"]).status_code == 200


BAD = [
    (("fly", "--region", "CN"), "capability"),
    (("host", "--region", "XX"), "region"),
    (("host", "--region", "CN", "--at", "yesterday"), "at"),
    (("host", "--region", "CN", "--as-known-at", "2020-13-01"), "as_known_at"),
    (("host", "--region", "CN", "--cursor", "not-a-cursor"), "cursor"),
    (("host", "--region", "CN", "--limit", "0"), "limit"),
    (("host", "--region", "CN", "--plan", "gold"), "plan"),
]


@pytest.mark.parametrize(("args", "field"), BAD)
def test_bad_input_exits_2_naming_it(served: Served, args: tuple[str, ...], field: str) -> None:
    _, _, url = served
    done = entitlements("--db", url, "who-can", *args)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(f"error: {field}: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "field"), BAD)
def test_bad_input_is_422_naming_it(served: Served, args: tuple[str, ...], field: str) -> None:
    client, headers, _ = served
    capability, *options = args
    params = {
        options[i].lstrip("-").replace("-", "_"): options[i + 1]
        for i in (0, 2)[: len(options) // 2]
    }
    r = client.get(f"/v1/who-can/{capability}", params=params, headers=headers["checker"])
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and "\n" not in r.json()["detail"]


def test_a_cursor_of_another_store_is_refused(served: Served, tmp_path: Path) -> None:
    client, headers, url = served
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with open_engine(other) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl"))[:20])
    cursor = cli_json(other, "host", "--region", "CN", "--limit", "1")["next_cursor"]
    assert cursor
    done = entitlements("--db", url, "who-can", "host", "--region", "CN", "--cursor", cursor)
    assert done.returncode == 2 and done.stderr.startswith("error: cursor: ")
    r = client.get(
        "/v1/who-can/host",
        params={"region": "CN", "cursor": cursor},
        headers=headers["checker"],
    )
    assert r.status_code == 422 and r.json()["field"] == "cursor"


def test_commands_posted_between_pages_change_no_page(served: Served) -> None:
    """New accounts before and after the cursor, posted between pages: the walk still
    lists exactly the first page's answer, every page at its position."""
    client, headers, _ = served
    params: dict[str, Any] = {"region": "CN", "limit": 1}
    whole = client.get("/v1/who-can/host", params={"region": "CN"}, headers=headers["checker"])
    listed, positions, n = [], set(), 0
    cursor = None
    while True:
        page = client.get(
            "/v1/who-can/host",
            params={**params, **({"cursor": cursor} if cursor else {})},
            headers=headers["checker"],
        ).json()
        listed += page["accounts"]
        positions.add(page["position"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        n += 1
        posted = client.post(
            "/v1/commands",
            json={
                "commands": [
                    {"command": "register_account", "account_id": f"{prefix}-{n}",
                     "region": "CN", "plan": "pro", "channel": "online",
                     "effective_at": "2020-01-01"}
                    for prefix in ("cn-a", "cn-z")
                ]
            },
            headers=headers["admin"],
        )  # fmt: skip
        assert posted.status_code == 200, posted.text
    assert listed == whole.json()["accounts"] and positions == {whole.json()["position"]}
    again = client.get("/v1/who-can/host", params={"region": "CN"}, headers=headers["checker"])
    assert len(again.json()["accounts"]) == len(listed) + 2 * n
