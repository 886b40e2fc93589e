"""The HTTP door against a real server process (`entitlements serve`, two workers, loopback),
on SQLite and PostgreSQL: the china-2020 decisions, the role x endpoint matrix, every status,
and a retried POST with the same Idempotency-Key applied once. One server per store for the
whole module (tests here only use it, in file order)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from entitlements import open_engine
from entitlements.application.access import open_tokens
from tests.conftest import postgres_or_skip, read_jsonl, scenario_file
from tests.e2e.servers import HTTP, start_server

ROLES = ("checker", "auditor", "admin")


@dataclass
class Server:
    base: str
    bearer: dict[str, dict[str, str]]

    def request(
        self, method: str, path: str, role: str | None = "checker", **kw: object
    ) -> httpx.Response:
        headers = {**(self.bearer[role] if role else {}), **kw.pop("headers", {})}  # type: ignore[dict-item]
        # a new connection: either worker
        return HTTP.request(method, self.base + path, headers=headers, timeout=15, **kw)  # type: ignore[arg-type]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("http")
    url = f"sqlite:///{folder / 'store.db'}" if request.param == "sqlite" else postgres_or_skip()
    with open_engine(url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    with open_tokens(url) as tokens:
        bearer = {
            role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"} for role in ROLES
        }
    process, base = start_server(url, workers=2, cache=folder / "cache")
    try:
        yield Server(base, bearer)
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def test_the_scenarios_decisions(server: Server) -> None:
    for row in read_jsonl(scenario_file("china-2020.expected.jsonl")):
        params = {k: row[k] for k in ("at", "as_known_at") if k in row}
        d = server.request(
            "GET", f"/v1/accounts/{row['account_id']}/can/{row['capability']}", params=params
        ).json()
        for key in ("allowed", "value"):
            if key in row:
                assert d[key] == row[key], (row, d)


MATRIX = [
    ("checker", "GET", "/v1/ping", None),
    ("checker", "GET", "/v1/accounts/cn-free-01/can/host", None),
    ("checker", "GET", "/v1/accounts/cn-free-01/capabilities", None),
    (
        "checker",
        "POST",
        "/v1/checks",
        {"checks": [{"account_id": "cn-free-01", "capability": "join"}]},
    ),
    ("checker", "GET", "/v1/changes", None),
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
            "command_id": "matrix-1",
        },
    ),
]


def test_every_role_against_every_endpoint(server: Server) -> None:
    for needs, method, path, body in MATRIX:
        assert server.request(method, path, role=None, json=body).status_code == 401, path
        assert (
            server.request(
                method, path, role=None, json=body, headers={"Authorization": "Bearer ent_unknown"}
            ).status_code
            == 401
        ), path
        for role in ROLES:
            allowed = ROLES.index(role) >= ROLES.index(needs)
            r = server.request(method, path, role=role, json=body)
            assert r.status_code == (200 if allowed else 403), (role, path, r.text)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/accounts/nobody/can/host", None, 404),
        ("GET", "/v1/accounts/cn-free-01/can/fly", None, 422),
        ("GET", "/v1/accounts/cn-free-01/can/host?at=not-a-time", None, 422),
        ("GET", "/v1/accounts/cn-free-01/can/host?min_position=999999", None, 409),
        ("POST", "/v1/checks", {"checks": "no"}, 422),
        ("POST", "/v1/checks", {"checks": [{"account_id": "nobody", "capability": "host"}]}, 200),
    ],
)
def test_every_status(server: Server, method: str, path: str, body: object, status: int) -> None:
    r = server.request(method, path, json=body)
    assert r.status_code == status, r.text
    if status >= 400:
        assert "\n" not in r.json()["detail"]
    if status == 409:
        assert isinstance(r.json()["position"], int)


def test_a_body_over_the_limit_is_413(server: Server) -> None:
    r = server.request(
        "POST",
        "/v1/checks",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_a_retried_post_with_the_same_idempotency_key_is_applied_once(server: Server) -> None:
    command = {
        "command": "revoke_hosting",
        "account_id": "us-pro-01",
        "reason": "review",
        "effective_at": "2020-12-01",
    }
    sent = [
        server.request(
            "POST",
            "/v1/commands",
            role="admin",
            json=command,
            headers={"Idempotency-Key": "retry-1"},
        ).json()["results"][0]
        for _ in range(3)
    ]
    assert [(r["status"], r["duplicate"]) for r in sent] == [
        ("applied", False),
        ("applied", True),
        ("applied", True),
    ]
    assert len({r["position"] for r in sent}) == 1
    history = server.request(
        "GET", "/v1/accounts/us-pro-01/history", role="auditor", params={}
    ).json()["events"]
    assert [e["type"] for e in history].count("HostingRevoked") == 1
    d = server.request(
        "GET",
        "/v1/accounts/us-pro-01/can/host",
        params={"at": "2020-12-02", "min_position": sent[0]["position"]},
    ).json()
    assert d["allowed"] is False
