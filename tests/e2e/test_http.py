"""The HTTP door (INTERFACES.md): decisions, roles, statuses and commands, in-process
(FastAPI's TestClient) on SQLite and PostgreSQL, and one real server with two workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.http import MAX_BODY, create_app
from entitlements.tokens import TokenStore
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.servers import start_server

ROLES = ("checker", "auditor", "admin")


@pytest.fixture
def served(store_url: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """The china-2020 store behind the app, and a bearer header per role."""
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    tokens = TokenStore(store_url)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"} for role in ROLES
    }
    with TestClient(create_app(store_url, follow=False), raise_server_exceptions=False) as client:
        yield client, headers


def test_the_scenarios_decisions_over_http(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    for row in read_jsonl(scenario_file("china-2020.expected.jsonl")):
        params = {k: row[k] for k in ("at", "as_known_at") if k in row}
        r = client.get(
            f"/v1/accounts/{row['account_id']}/can/{row['capability']}",
            params=params,
            headers=headers["checker"],
        )
        assert r.status_code == 200, r.text
        d = r.json()
        if "allowed" in row:
            assert d["allowed"] is row["allowed"], row
        if "value" in row:
            assert d["value"] == row["value"], row
        assert {"account_id", "capability", "reason", "because", "position"} <= set(d)


ENDPOINTS: list[tuple[str, str, str, Any]] = [
    ("checker", "GET", "/v1/ping", None),
    ("checker", "GET", "/v1/changes", None),
    ("checker", "GET", "/v1/accounts/cn-free-01/can/host", None),
    ("checker", "GET", "/v1/accounts/cn-free-01/capabilities", None),
    (
        "checker",
        "POST",
        "/v1/checks",
        {"checks": [{"account_id": "cn-free-01", "capability": "join"}]},
    ),
    ("auditor", "GET", "/v1/accounts/cn-free-01/history", None),
    ("auditor", "GET", "/v1/rejections", None),
    (
        "admin",
        "POST",
        "/v1/commands",
        {
            "command": "authorize_partner",
            "region": "DE",
            "partner": "P",
            "effective_at": "2020-01-01",
        },
    ),
]


@pytest.mark.parametrize(("needs", "method", "path", "body"), ENDPOINTS)
def test_every_role_against_every_endpoint(
    served: tuple[TestClient, dict[str, dict[str, str]]],
    needs: str,
    method: str,
    path: str,
    body: Any,
) -> None:
    client, headers = served
    assert client.request(method, path, json=body).status_code == 401
    assert (
        client.request(
            method, path, json=body, headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    for role in ROLES:
        r = client.request(method, path, json=body, headers=headers[role])
        allowed = ROLES.index(role) >= ROLES.index(needs)
        assert r.status_code == (200 if allowed else 403), (role, path, r.text)


def test_a_revoked_token_is_refused_at_once(
    served: tuple[TestClient, dict[str, dict[str, str]]], store_url: str
) -> None:
    client, headers = served
    assert (
        client.get("/v1/accounts/cn-free-01/can/host", headers=headers["checker"]).status_code
        == 200
    )
    TokenStore(store_url).revoke("checker-1")  # another process: the CLI, say
    assert (
        client.get("/v1/accounts/cn-free-01/can/host", headers=headers["checker"]).status_code
        == 401
    )


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/v1/accounts/nobody/can/host", 404, None),
        ("/v1/accounts/cn-free-01/can/fly", 422, "capability"),
        ("/v1/accounts/cn-free-01/can/host?at=yesterday", 422, "at"),
        ("/v1/accounts/cn-free-01/can/host?as_known_at=2020-13-01", 422, "as_known_at"),
        ("/v1/accounts/cn-free-01/can/host?at=0001-01-01T00:00:00%2B01:00", 422, "at"),
        ("/v1/accounts/cn-free-01/can/host?min_position=-1", 422, "min_position"),
        ("/v1/accounts/cn-free-01/can/host?min_position=999999", 409, None),
    ],
)
def test_statuses_for_bad_questions(
    served: tuple[TestClient, dict[str, dict[str, str]]], path: str, status: int, field: str | None
) -> None:
    client, headers = served
    client.app.state.engine.wait_timeout = 0.2  # type: ignore[attr-defined]
    r = client.get(path, headers=headers["checker"])
    assert r.status_code == status, r.text
    detail = r.json()
    assert "\n" not in detail["detail"]
    if field:
        assert detail["field"] == field
    if status == 409:
        assert detail["position"] == client.app.state.engine.index.position  # type: ignore[attr-defined]


def test_a_batch_answers_in_order_with_an_unknown_account_as_an_error_item(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    body = {
        "checks": [
            {"account_id": "cn-free-01", "capability": "host", "at": "2020-05-18"},
            {"account_id": "nobody", "capability": "host"},
            {"account_id": "cn-free-01", "capability": "host", "at": "2020-05-19"},
            {"account_id": "cn-free-01", "capability": "fly"},
        ]
    }
    r = client.post("/v1/checks", json=body, headers=headers["checker"])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x.get("allowed", x.get("status")) for x in results] == [True, 404, False, 422]


def test_commands_over_http_validate_whole_then_apply_once_per_idempotency_key(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    admin = headers["admin"]
    bad = {
        "commands": [
            {
                "command": "authorize_partner",
                "region": "DE",
                "partner": "P",
                "effective_at": "2020-01-01",
            },
            {
                "command": "authorize_partner",
                "region": "de",
                "partner": "P",
                "effective_at": "2020-01-01",
            },
        ]
    }
    position = client.app.state.engine.position()  # type: ignore[attr-defined]
    r = client.post("/v1/commands", json=bad, headers=admin)
    assert r.status_code == 422 and r.json()["item"] == 2 and r.json()["field"] == "region"
    assert client.app.state.engine.position() == position  # type: ignore[attr-defined]
    revoke = {
        "command": "revoke_hosting",
        "account_id": "us-pro-01",
        "reason": "review",
        "effective_at": "2020-12-01",
    }
    first = client.post("/v1/commands", json=revoke, headers={**admin, "Idempotency-Key": "k-1"})
    again = client.post("/v1/commands", json=revoke, headers={**admin, "Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    (one,), (two,) = first.json()["results"], again.json()["results"]
    assert (one["status"], one["command_id"], one["duplicate"]) == ("applied", "k-1", False)
    assert (two["status"], two["position"], two["duplicate"]) == ("applied", one["position"], True)
    history = client.get("/v1/accounts/us-pro-01/history", headers=headers["auditor"]).json()[
        "events"
    ]
    (revoked,) = [e for e in history if e["type"] == "HostingRevoked"]
    assert revoked["actor"] == "admin-1"  # the token's name, as none was given
    d = client.get(
        "/v1/accounts/us-pro-01/can/host",
        params={"at": "2020-12-02", "min_position": one["position"]},
        headers=headers["checker"],
    ).json()
    assert d["allowed"] is False


def test_a_body_over_the_limit_is_413_and_a_bad_body_422(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    big = b'{"checks": [' + b" " * (MAX_BODY + 1) + b"]}"
    r = client.post(
        "/v1/checks",
        content=big,
        headers={**headers["checker"], "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    r = client.post(
        "/v1/checks",
        content=b"{not json",
        headers={**headers["checker"], "Content-Type": "application/json"},
    )
    assert r.status_code == 422
    r = client.post(
        "/v1/checks", json={"checks": [{"account_id": "a"}]}, headers=headers["checker"]
    )
    assert r.status_code == 422 and "capability" in r.json()["field"]


def test_health_metrics_and_openapi_need_no_token(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    client.get("/v1/accounts/cn-free-01/can/host", headers=headers["checker"])
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    metrics = client.get("/metrics").text
    assert 'entitlements_checks_total{capability="host",outcome="denied"} 1.0' in metrics
    assert (
        "entitlements_index_position" in metrics and "entitlements_check_seconds_bucket" in metrics
    )
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/accounts/{account_id}/can/{capability}" in paths and "/v1/commands" in paths


@pytest.mark.slow
def test_a_real_server_with_two_workers_reads_its_writes_and_refuses_a_revoked_token(
    store_url: str,
) -> None:
    with open_engine(store_url) as engine:
        engine.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "u-1",
                    "region": "US",
                    "plan": "pro",
                    "channel": "online",
                    "effective_at": "2020-01-01",
                }
            ]
        )
    tokens = TokenStore(store_url)
    admin = {"Authorization": f"Bearer {tokens.create('ops', 'admin')}"}
    server, base = start_server(store_url, workers=2)
    try:
        for i in range(6):  # new connections land on either worker
            command = {
                "command": "revoke_hosting" if i % 2 == 0 else "restore_hosting",
                "account_id": "u-1",
                "reason": f"flip {i}",
                "effective_at": "2020-02-01",
            }
            with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
                (result,) = c.post("/v1/commands", json=command).json()["results"]
            with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
                d = c.get(
                    "/v1/accounts/u-1/can/host", params={"min_position": result["position"]}
                ).json()
            assert "allowed" in d, (result, d)
            assert d["allowed"] is (i % 2 == 1) and d["position"] >= result["position"], d
        tokens.revoke("ops")
        for _ in range(4):
            with httpx.Client(base_url=base, headers=admin, timeout=10) as c:
                assert c.get("/v1/accounts/u-1/can/host").status_code == 401
    finally:
        server.terminate()  # SIGTERM: uvicorn drains and stops
        server.wait(30)
    assert server.returncode == 0, server.stderr.read() if server.stderr else ""


def test_the_change_feed_lists_what_changed_and_waits_for_news(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    checker = headers["checker"]
    feed = client.get("/v1/changes", params={"after": 0, "limit": 1000}, headers=checker).json()
    items, head = feed["changes"], feed["next"]
    assert any(
        i.get("account_id") == "cn-free-01"
        and i["capability"] == "host"
        and (i["old"]["allowed"], i["new"]["allowed"]) == (True, False)
        for i in items
    )
    assert any(i.get("region") == "CN" and i["capability"] == "subscribe_online" for i in items)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert head == engine.position()
    started = time.monotonic()
    empty = client.get("/v1/changes", params={"after": head, "wait": 0.3}, headers=checker).json()
    assert empty == {"changes": [], "next": head} and time.monotonic() - started >= 0.3

    def later() -> None:
        time.sleep(0.3)
        engine.apply(
            [
                {
                    "command": "revoke_hosting",
                    "account_id": "us-pro-01",
                    "reason": "review",
                    "effective_at": "2020-12-01",
                }
            ]
        )

    import threading

    writer = threading.Thread(target=later)
    writer.start()
    started = time.monotonic()
    news = client.get("/v1/changes", params={"after": head, "wait": 10}, headers=checker).json()
    writer.join()
    assert time.monotonic() - started < 5
    assert [(i["account_id"], i["capability"]) for i in news["changes"]][0] == ("us-pro-01", "host")
    assert client.get("/v1/changes", params={"wait": 31}, headers=checker).status_code == 422
    assert client.get("/v1/changes").status_code == 401


def test_a_store_outage_is_a_503_with_one_line(
    served: tuple[TestClient, dict[str, dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, headers = served
    from sqlalchemy.exc import OperationalError

    def down(*_: Any) -> None:
        raise OperationalError(
            "SELECT ...", {}, Exception("connection refused\nDETAIL: the server is gone")
        )

    monkeypatch.setattr(client.app.state.tokens, "authenticate", down)  # type: ignore[attr-defined]
    r = client.get("/v1/accounts/cn-free-01/can/host", headers=headers["checker"])
    assert r.status_code == 503 and r.json()["detail"] == "connection refused"


@pytest.mark.slow
@pytest.mark.timing
def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Any) -> None:
    """A waiting /v1/changes request, then SIGTERM: the answer still comes, then the server stops."""
    import threading

    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_engine(url) as engine:
        engine.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "u-1",
                    "region": "US",
                    "plan": "pro",
                    "channel": "online",
                    "effective_at": "2020-01-01",
                }
            ]
        )
        head = engine.position()
    checker = {"Authorization": f"Bearer {TokenStore(url).create('meetings', 'checker')}"}
    server, base = start_server(url, cache=tmp_path)
    try:
        answers: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: answers.append(
                httpx.get(
                    f"{base}/v1/changes",
                    params={"after": head, "wait": 2},
                    headers=checker,
                    timeout=30,
                )
            )
        )
        waiting.start()
        time.sleep(0.5)  # the request is in flight, waiting for news
        server.terminate()
        waiting.join(30)
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
    (answer,) = answers
    assert answer.status_code == 200 and answer.json() == {"changes": [], "next": head}
    # One worker: uvicorn drains, then ends by the signal it was sent (as a shell expects).
    assert server.returncode in (0, -15), server.stderr.read() if server.stderr else ""
