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
from entitlements.application.access import open_tokens
from entitlements.http.app import create_app
from entitlements.http.schemas import MAX_BODY
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.servers import HTTP, start_server

ROLES = ("checker", "auditor", "admin")


@pytest.fixture
def served(store_url: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """The china-2020 store behind the app, and a bearer header per role."""
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    tokens = open_tokens(store_url)
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


def test_a_revoked_token_is_refused_within_a_second(
    served: tuple[TestClient, dict[str, dict[str, str]]], store_url: str
) -> None:
    """The worker authenticates from its own table of tokens, read again twice a second:
    a token revoked elsewhere (the CLI, say) stops working within a second, on every route."""
    client, headers = served
    url, checker = "/v1/accounts/cn-free-01/can/host", headers["checker"]
    assert client.get(url, headers=checker).status_code == 200
    open_tokens(store_url).revoke("checker-1")
    revoked = time.monotonic()
    while client.get(url, headers=checker).status_code == 200:
        assert time.monotonic() - revoked < 1.0, "still accepted a second after its revocation"
        time.sleep(0.02)
    assert client.get(url, headers=checker).status_code == 401
    assert client.get(url + "?at=2020-06-01", headers=checker).status_code == 401


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
    client.app.state.worker.engine.queries.wait_timeout = 0.2  # type: ignore[attr-defined]
    r = client.get(path, headers=headers["checker"])
    assert r.status_code == status, r.text
    detail = r.json()
    assert "\n" not in detail["detail"]
    if field:
        assert detail["field"] == field
    if status == 409:
        assert detail["position"] == client.app.state.worker.engine.index.position  # type: ignore[attr-defined]


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
    position = client.app.state.worker.engine.position()  # type: ignore[attr-defined]
    r = client.post("/v1/commands", json=bad, headers=admin)
    assert r.status_code == 422 and r.json()["item"] == 2 and r.json()["field"] == "region"
    assert client.app.state.worker.engine.position() == position  # type: ignore[attr-defined]
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


def test_a_chunked_body_is_limited_as_it_arrives(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    """No Content-Length to refuse up front: the body is counted as it comes, and the
    request is refused with 413 once past the limit."""
    client, headers = served

    def chunks() -> Iterator[bytes]:
        yield b'{"checks": ['
        for _ in range(64):  # 4 MiB, in 64 KiB pieces
            yield b" " * 65536
        yield b"]}"

    r = client.post(
        "/v1/checks",
        content=chunks(),
        headers={**headers["checker"], "Content-Type": "application/json"},
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413  # (that the rest is never read: test_http_server.py)


@pytest.mark.parametrize(
    ("path", "role", "body", "field"),
    [
        (
            "/v1/commands",
            "admin",
            b'{"command": "register_account", "account_id": "dup-1", "region": "CN",'
            b' "jurisdiction": "CN", "jurisdiction": "platform", "plan": "free",'
            b' "channel": "online", "effective_at": "2020-01-01"}',
            "jurisdiction",
        ),
        (
            "/v1/commands",
            "admin",
            b'{"command": "revoke_hosting", "account_id": "cn-free-01",'
            b' "account_id": "cn-pro-01", "reason": "x", "effective_at": "2020-01-01"}',
            "account_id",
        ),
        (
            "/v1/checks",
            "checker",
            b'{"checks": [{"account_id": "cn-free-01", "capability": "host",'
            b' "capability": "join"}]}',
            "capability",
        ),
    ],
)
def test_a_key_given_twice_is_422_naming_it_and_changes_nothing(
    served: tuple[TestClient, dict[str, dict[str, str]]],
    path: str,
    role: str,
    body: bytes,
    field: str,
) -> None:
    """The command file's own rule, over HTTP: the last key does not silently win."""
    client, headers = served
    engine = client.app.state.worker.engine  # type: ignore[attr-defined]
    before = engine.position()
    pro = "/v1/accounts/cn-pro-01/capabilities?at=2020-06-01"
    answers = client.get(pro, headers=headers["checker"]).json()
    r = client.post(
        path, content=body, headers={**headers[role], "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json() == {"detail": "body: key given twice", "field": field}
    assert engine.position() == before
    assert client.get(pro, headers=headers["checker"]).json() == answers  # nothing revoked


def test_a_body_that_is_not_json_is_415_naming_the_content_type(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    form = {**headers["checker"], "Content-Type": "application/x-www-form-urlencoded"}
    r = client.post("/v1/checks", content=b'{"checks": []}', headers=form)
    assert r.status_code == 415 and r.json()["field"] == "Content-Type"
    bare = client.post("/v1/checks", content=b'{"checks": []}', headers=headers["checker"])
    assert bare.status_code == 200  # no Content-Type at all is read as JSON


def test_the_plain_check_is_answered_before_routing_with_the_routes_own_bytes(
    served: tuple[TestClient, dict[str, dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fastpath.py answers `can` without a query; with one, the FastAPI route answers. The
    two give the same body, and every failure of the plain check is the route's answer."""
    client, headers = served
    app = client.app
    answered: list[str] = []
    real = app.fast.answer  # type: ignore[attr-defined]

    async def spy(send: Any, decision: Any) -> None:
        answered.append(decision.account_id)
        await real(send, decision)

    monkeypatch.setattr(app.fast, "answer", spy)  # type: ignore[attr-defined]
    checker = headers["checker"]
    for account in ("cn-free-01", "cn-pro-01", "hk-free-01"):
        fast = client.get(f"/v1/accounts/{account}/can/host", headers=checker)
        routed = client.get(f"/v1/accounts/{account}/can/host?min_position=0", headers=checker)
        assert fast.status_code == routed.status_code == 200
        assert fast.content == routed.content
        assert fast.headers["content-type"] == routed.headers["content-type"]
    assert answered == ["cn-free-01", "cn-pro-01", "hk-free-01"]
    answered.clear()
    assert client.get("/v1/accounts/nobody/can/host", headers=checker).status_code == 404
    assert client.get("/v1/accounts/cn-free-01/can/fly", headers=checker).status_code == 422
    assert client.get("/v1/accounts/cn-free-01/can/host").status_code == 401
    bad = {"Authorization": "Bearer ent_not-a-token"}
    assert client.get("/v1/accounts/cn-free-01/can/host", headers=bad).status_code == 401
    assert answered == []


def test_health_metrics_and_openapi_need_no_token(
    served: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    client, headers = served
    client.get("/v1/accounts/cn-free-01/can/host", headers=headers["checker"])
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ready",
        "position": client.app.state.worker.engine.index.position,  # type: ignore[attr-defined]
        "stale_since": None,
    }
    metrics = client.get("/metrics").text
    assert 'entitlements_checks_total{capability="host",outcome="denied"} 1.0' in metrics
    assert (
        "entitlements_index_position" in metrics and "entitlements_check_seconds_bucket" in metrics
    )
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/accounts/{account_id}/can/{capability}" in paths and "/v1/commands" in paths


@pytest.mark.slow
def test_a_real_server_with_two_workers_reads_its_writes_and_refuses_a_revoked_token_within_a_second(
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
    tokens = open_tokens(store_url)
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
            (result,) = HTTP.post(f"{base}/v1/commands", json=command, headers=admin).json()[
                "results"
            ]
            d = HTTP.get(
                f"{base}/v1/accounts/u-1/can/host",
                params={"min_position": result["position"]},
                headers=admin,
            ).json()
            assert "allowed" in d, (result, d)
            assert d["allowed"] is (i % 2 == 1) and d["position"] >= result["position"], d
        tokens.revoke("ops")
        time.sleep(1.0)  # every worker reads its tokens again within a second
        for _ in range(10):  # new connections land on either worker
            assert HTTP.get(f"{base}/v1/accounts/u-1/can/host", headers=admin).status_code == 401
    finally:
        server.terminate()  # SIGTERM: the server (granian) drains and stops
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
    engine = client.app.state.worker.engine  # type: ignore[attr-defined]
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


def test_a_store_outage_is_a_503_with_one_line_where_the_store_is_read(
    served: tuple[TestClient, dict[str, dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks answer from the worker's memory (tokens and index) with the store gone; a
    route that must read the store says so in one line, 503."""
    client, headers = served
    from sqlalchemy.exc import OperationalError

    def down(*_: Any, **__: Any) -> None:
        raise OperationalError(
            "SELECT ...", {}, Exception("connection refused\nDETAIL: the server is gone")
        )

    worker = client.app.state.worker  # type: ignore[attr-defined]
    monkeypatch.setattr(worker.tokens.store, "valid", down)
    monkeypatch.setattr(worker.engine, "history", down)
    time.sleep(0.6)  # a refresh of the tokens fails meanwhile: the table held stays
    r = client.get("/v1/accounts/cn-free-01/can/host", headers=headers["checker"])
    assert r.status_code == 200 and r.json()["allowed"] is False
    r = client.get("/v1/accounts/cn-free-01/history", headers=headers["auditor"])
    assert r.status_code == 503 and r.json()["detail"] == "connection refused"
    assert worker.tokens.error == "connection refused"


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
    checker = {"Authorization": f"Bearer {open_tokens(url).create('meetings', 'checker')}"}
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
    # One worker: granian drains, then ends by the signal it was sent (as a shell expects).
    assert server.returncode in (0, -15), server.stderr.read() if server.stderr else ""


def test_a_worker_stopped_while_the_store_is_away_stops_cleanly(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.exc import OperationalError

    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    with TestClient(create_app(store_url, follow=False)) as client:
        worker = client.app.state.worker  # type: ignore[attr-defined]
        real_close = worker.engine.close

        def down() -> None:
            real_close()
            raise OperationalError("SELECT ...", {}, Exception("connection refused"))

        worker.engine.close = down
    assert "closed without its snapshot: connection refused" in caplog.text


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{\n "checks":\n  [\n', "body: bad JSON at line 4, column 1: Expecting value"),
        (b'{"checks": "a\x01b"}', "body: bad JSON at line 1, column 14: Invalid control character"),
    ],
)
def test_a_malformed_body_names_line_and_column_as_its_position_not_a_field(
    served: tuple[TestClient, dict[str, dict[str, str]]], body: bytes, detail: str
) -> None:
    client, headers = served
    r = client.post(
        "/v1/checks",
        content=body,
        headers={**headers["checker"], "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json() == {"detail": detail}, r.text
