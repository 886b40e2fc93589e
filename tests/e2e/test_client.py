"""entitlements.client.Client against a real server (issue 19): it answers as the engine,
follows commands, keeps answering through a server killed mid-stream and says since when
it is stale, resumes with no record missed or applied twice; starts offline from a file;
and 50 clients on one server each receive every record once, in order."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from entitlements import open_engine
from entitlements.application.access import open_tokens
from entitlements.application.engine import Engine
from entitlements.application.replica import export_snapshot
from entitlements.client import Client, Stale
from entitlements.client.sse import events
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.servers import free_port, start_server

ACCOUNTS = ("cn-free-01", "cn-free-02", "cn-pro-01", "cn-ent-02", "us-pro-01")
PROBES = [(None, None), ("2020-05-19", "2020-06-01"), ("2020-10-01", "2020-10-20")]


def revoke(account_id: str, n: int) -> dict[str, Any]:
    return {
        "command": "revoke_hosting" if n % 2 == 0 else "restore_hosting",
        "account_id": account_id,
        "reason": f"review {n}",
        "effective_at": "2020-12-01",
    }


def applied_at(engine: Engine, command: dict[str, Any]) -> int:
    """Apply one command; the log position it reached."""
    (result,) = engine.apply([command])
    assert result.position is not None
    return result.position


def answer(d: Any) -> tuple[Any, ...]:
    """A Decision but its `position`: a "now" answer an index holds from an earlier check
    keeps the position it was made at, so that differs with the checks each side was asked
    (the in-process property test compares whole Decisions, asked alike)."""
    return (d.account_id, d.capability, d.allowed, d.value, d.reason, d.because)


def same_answers(client: Client, engine: Engine) -> None:
    assert client.status.position == engine.position()
    for account_id in ACCOUNTS:
        for at, known in PROBES:
            for cap in ("host", "join", "max_participants"):
                got = client.check(account_id, cap, at, known)
                assert answer(got) == answer(engine.check(account_id, cap, at, known))
        assert list(map(answer, client.capabilities(account_id))) == list(
            map(answer, engine.capabilities(account_id))
        )


def recording(client: Client) -> list[int]:
    """The positions the client's copy applies from now on, in the order it applies them."""
    applied: list[int] = []
    copy = client._copy
    take = copy.apply

    def apply(record: Any) -> Any:
        changed = take(record)
        if changed is not None:
            applied.append(record["position"])
        return changed

    copy.apply = apply  # type: ignore[method-assign]
    return applied


def threads_of_group(group: int) -> int:
    """Threads of every process in the process group `group` (the server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == group:  # pgrp, after the state and the ppid
                status = (stat.parent / "status").read_text()
                total += int(next(x for x in status.splitlines() if x.startswith("Threads:"))[8:])
        except (OSError, ValueError, StopIteration):
            continue
    return total


@pytest.fixture
def store(store_url: str) -> Iterator[tuple[str, str, Engine]]:
    """The china-2020 store (SQLite, PostgreSQL), a checker token, an engine writing to it."""
    url = store_url
    with open_engine(url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    with open_tokens(url) as tokens:
        token = tokens.create("checker-1", "checker")
    with open_engine(url) as engine:
        yield url, token, engine


@pytest.mark.slow
@pytest.mark.timing
def test_the_client_keeps_answering_through_a_restart_and_misses_nothing(
    store: tuple[str, str, Engine], tmp_path: Path
) -> None:
    url, token, engine = store
    port = free_port()
    server, base = start_server(url, cache=tmp_path / "cache", port=port, session=True)
    try:
        with Client(base, token=token, backoff=(0.05, 0.3), read_timeout=5) as client:
            start = client.status.position
            applied = recording(client)
            same_answers(client, engine)
            client.wait_for(applied_at(engine, revoke("us-pro-01", 0)), timeout=10)
            same_answers(client, engine)
            assert client.status.connected and client.status.stale_since is None

            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
            away = [applied_at(engine, revoke(a, n)) for n, a in enumerate(ACCOUNTS)]
            deadline = time.monotonic() + 10
            while client.status.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            status = client.status
            assert not status.connected and status.stale_since is not None
            assert client.check("us-pro-01", "host").allowed is False  # from what it has
            client.max_staleness = 0.0
            with pytest.raises(Stale, match="^stale since "):
                client.check("us-pro-01", "host")
            client.max_staleness = None

            server, _ = start_server(url, cache=tmp_path / "cache", port=port, session=True)
            client.wait_for(away[-1], timeout=20)
            assert client.status.connected and client.status.stale_since is None
            same_answers(client, engine)
            expected = list(range(start + 1, engine.position() + 1))
            assert applied == expected  # every record once, in order, across the restart
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


def test_an_offline_start_from_a_file_answers_with_no_server(
    store: tuple[str, str, Engine], tmp_path: Path
) -> None:
    url, token, engine = store
    export_snapshot(engine, tmp_path / "snapshot.index")
    away = f"http://127.0.0.1:{free_port()}"
    with Client(away, token=token, bootstrap=tmp_path / "snapshot.index") as client:
        same_answers(client, engine)
        status = client.status
        assert status.position == engine.position()
        assert not status.connected and status.stale_since is not None


@pytest.mark.slow
def test_fifty_clients_on_one_server_each_receive_every_record_once_in_order(
    store: tuple[str, str, Engine], tmp_path: Path
) -> None:
    url, token, engine = store
    server, base = start_server(url, cache=tmp_path / "cache", session=True)
    try:
        with ExitStack() as stack:
            idle = threads_of_group(server.pid)
            assert idle > 1  # the server and its worker found
            clients = [stack.enter_context(Client(base, token=token)) for _ in range(50)]
            start = engine.position()
            applied = [recording(c) for c in clients]
            positions = [applied_at(engine, revoke("us-pro-01", n)) for n in range(5)]
            for client in clients:
                client.wait_for(positions[-1], timeout=20)
            expected = list(range(start + 1, engine.position() + 1))
            assert all(a == expected for a in applied)
            # the streams wait on the worker's event loop: no thread per client
            busy = threads_of_group(server.pid)
            assert busy < idle + 10, (idle, busy)
            expected_answer = answer(engine.check("us-pro-01", "host"))
            assert all(answer(c.check("us-pro-01", "host")) == expected_answer for c in clients)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


@pytest.mark.slow
def test_on_change_and_the_changes_stream_give_the_change_feeds_items(
    store: tuple[str, str, Engine], tmp_path: Path
) -> None:
    url, token, engine = store
    server, base = start_server(url, cache=tmp_path / "cache", session=True)
    try:
        seen: list[dict[str, Any]] = []
        with Client(base, token=token, on_change=seen.append) as client:
            start = client.status.position
            last = [applied_at(engine, revoke(a, n)) for n, a in enumerate(ACCOUNTS)][-1]
            client.wait_for(last, timeout=10)
            expected, _ = engine.changes(after=start, limit=1000)
            assert expected and seen == expected
            bearer = {"Authorization": f"Bearer {token}"}
            with (
                httpx.Client(base_url=base, headers=bearer, timeout=10) as http,
                http.stream("GET", "/v1/changes/stream", params={"after": start}) as got,
            ):
                pushed, ids = [], []
                for e in events(got.iter_lines()):
                    pushed.append(json.loads(e.data))
                    ids.append(e.id)
                    if len(pushed) == len(expected):
                        break
            assert pushed == expected
            assert ids[-1] == str(expected[-1]["position"])  # a whole position's items
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
