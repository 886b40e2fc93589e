"""`entitlements serve` through what a PostgreSQL server does to it, on a throwaway cluster of
the test's own (never the machine's server): a restart, an outage, a start while the store
is down. Checks answer throughout from each worker's memory; /healthz degrades and recovers;
a command made afterwards reaches the HTTP answer within 10 s; the server never exits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from entitlements import open_engine
from entitlements.application.access import open_tokens
from tests.conftest import ThrowawayPostgres, registrations
from tests.e2e.servers import HTTP, fresh_connections, start_server, worker_pids

pytestmark = [pytest.mark.postgres, pytest.mark.timing, pytest.mark.slow]

ACCOUNTS = [f"u-{i}" for i in range(10)]


@dataclass
class Served:
    base: str
    checker: dict[str, str]
    admin: dict[str, str]
    process: Any
    workers: set[int] = field(default_factory=set)  # the worker processes it started with

    def check(
        self, account: str = "u-1", http: httpx.Client = HTTP, **params: str
    ) -> httpx.Response:
        """A check on a new connection (either worker); `http`: another thread's client."""
        return http.get(
            f"{self.base}/v1/accounts/{account}/can/host", params=params, headers=self.checker
        )

    def health(self) -> httpx.Response:
        return HTTP.get(f"{self.base}/healthz")


def prepare(url: str) -> tuple[dict[str, str], dict[str, str]]:
    with open_engine(url) as engine:
        engine.apply(registrations(ACCOUNTS))
    with open_tokens(url) as tokens:
        return (
            {"Authorization": f"Bearer {tokens.create('meetings', 'checker')}"},
            {"Authorization": f"Bearer {tokens.create('ops', 'admin')}"},
        )


def no_worker_died(served: Served) -> None:
    """The server is up with the workers it started with: an outage kills none of them (a
    worker respawned while the store is away would answer 503 "starting" until it is back)."""
    assert served.process.poll() is None, "the server exited"
    assert len(served.workers) == 2 and worker_pids(served.process) == served.workers, (
        f"a worker was replaced: {sorted(served.workers)} -> {sorted(worker_pids(served.process))}"
    )


@pytest.fixture
def served(
    throwaway_postgres: ThrowawayPostgres, tmp_path: Path
) -> Iterator[tuple[Served, ThrowawayPostgres]]:
    checker, admin = prepare(throwaway_postgres.url)
    process, base = start_server(
        throwaway_postgres.url, workers=2, cache=tmp_path, options=("--max-staleness", "4")
    )
    try:
        deadline = time.monotonic() + 10
        while len(workers := worker_pids(process)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield Served(base, checker, admin, process, workers), throwaway_postgres
    finally:
        process.terminate()
        process.wait(30)


@dataclass
class Hammer:
    """Checks on fresh connections (either worker) until stopped: every status seen."""

    served: Served
    statuses: list[int] = field(default_factory=list)
    stale: int = 0  # answers that said since when they may be stale
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Hammer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with fresh_connections(timeout=10) as http:  # this thread's own
            while not self._stop.is_set():
                self._check(http)
                time.sleep(0.02)

    def _check(self, http: httpx.Client) -> None:
        try:
            r = self.served.check(ACCOUNTS[len(self.statuses) % len(ACCOUNTS)], http)
            self.statuses.append(r.status_code)
            if r.status_code != 200:  # (what it said, for the failure's message)
                self.errors.append(f"{r.status_code} {r.text[:200]}")
            self.stale += "entitlements-stale-since" in r.headers
        except httpx.HTTPError as e:
            self.errors.append(repr(e))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def command_reaches_http(served: Served, account: str, seconds: float = 10.0) -> float:
    """POST a revocation (retried while the writer reconnects), then wait for the HTTP answer
    to show it; the seconds from the first POST to the answer."""
    started = time.monotonic()
    command = {
        "command": "revoke_hosting",
        "account_id": account,
        "reason": "after the store came back",
        "effective_at": "2020-06-01",
    }
    while True:
        r = HTTP.post(f"{served.base}/v1/commands", json=command, headers=served.admin, timeout=15)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and "\n" not in r.json()["detail"], r.text
        assert time.monotonic() - started < seconds, f"commands still refused: {r.text}"
        time.sleep(0.2)
    while served.check(account, at="2020-07-01").json()["allowed"]:
        assert time.monotonic() - started < seconds, "the command did not reach the answer"
        time.sleep(0.05)
    return time.monotonic() - started


def every_worker_recovers(served: Served, seconds: float = 30.0, in_a_row: int = 20) -> None:
    """Each request on a fresh connection reaches either worker, and each worker reconnects on
    its own backoff: wait until `in_a_row` answers in a row are ready and fresh, not just one."""
    deadline = time.monotonic() + seconds
    fresh = 0
    while fresh < in_a_row:
        health, check = served.health(), served.check("u-2")
        ok = health.json()["status"] == "ready" and "entitlements-stale-since" not in check.headers
        fresh = fresh + 1 if ok else 0
        assert time.monotonic() < deadline, (health.text, dict(check.headers))
        time.sleep(0.05)


def test_a_restart_under_serve_checks_answer_throughout_and_a_command_after_it_arrives(
    served: tuple[Served, ThrowawayPostgres],
) -> None:
    server, cluster = served
    with Hammer(server) as hammer:
        time.sleep(0.5)
        cluster.restart()
        command_reaches_http(server, "u-3")
        time.sleep(0.5)
    assert hammer.errors == [] and set(hammer.statuses) == {200}, (hammer.errors, hammer.statuses)
    every_worker_recovers(server)
    no_worker_died(server)


def test_an_outage_under_serve_degrades_then_recovers_and_never_ends_the_server(
    served: tuple[Served, ThrowawayPostgres],
) -> None:
    server, cluster = served
    with Hammer(server) as hammer:
        time.sleep(0.5)
        # health is asked from the moment the stop begins (a loaded machine may take seconds
        # to stop the cluster, and the 200 "degraded" window is the first 4 s of staleness)
        stopping = threading.Thread(target=cluster.stop)
        stopping.start()
        down = time.monotonic()
        seen: set[tuple[int, str]] = set()
        while time.monotonic() - down < 12 or stopping.is_alive():
            r = server.health()
            seen.add((r.status_code, r.json()["status"]))
            time.sleep(0.1)
        stopping.join()
        assert (200, "degraded") in seen and (503, "degraded") in seen, seen  # past 4 s: 503
        stale = server.check("u-2")
        assert stale.status_code == 200 and stale.headers["entitlements-stale-since"].endswith("Z")
        cluster.start_again()
        every_worker_recovers(server)
        command_reaches_http(server, "u-4")
    assert hammer.errors == [] and set(hammer.statuses) == {200}, (hammer.errors, hammer.statuses)
    assert hammer.stale > 0
    assert "entitlements-stale-since" not in server.check("u-2").headers
    no_worker_died(server)


def test_a_server_started_while_the_store_is_down_comes_up_with_it(
    throwaway_postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    checker, _ = prepare(throwaway_postgres.url)
    throwaway_postgres.stop()
    process, base = start_server(throwaway_postgres.url, workers=2, cache=tmp_path, ready=False)
    try:
        health = HTTP.get(f"{base}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "starting", health.text
        time.sleep(6)  # longer than the pool waits for a connection: no worker gives up
        assert process.poll() is None, "the server exited"
        throwaway_postgres.start_again()
        deadline, in_a_row = time.monotonic() + 30, 0
        while in_a_row < 20:  # new connections reach either worker: both must be up
            up = HTTP.get(f"{base}/healthz").status_code == 200
            in_a_row = in_a_row + 1 if up else 0
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for a in ACCOUNTS:  # new connections: both workers
            r = HTTP.get(f"{base}/v1/accounts/{a}/can/host", headers=checker)
            assert r.status_code == 200 and r.json()["allowed"] is True, r.text
    finally:
        process.terminate()
        process.wait(30)
