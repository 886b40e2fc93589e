"""The door as an attacker and an operator find it, against real `entitlements serve`
processes on SQLite: bodies limited as they arrive, slow clients timed out, long-polls that
hold no thread, metrics of the whole server, and a busy port."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from entitlements import open_engine
from entitlements.application.access import open_tokens
from tests.conftest import CLI, registrations
from tests.e2e.servers import HTTP, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timing]

ACCOUNTS = [f"u-{i}" for i in range(20)]


def a_store(folder: Path) -> tuple[str, int, dict[str, str]]:
    """A store of 20 accounts; its URL, head position and a bearer token per role."""
    url = f"sqlite:///{folder / 'store.db'}"
    with open_engine(url) as engine:
        engine.apply(registrations(ACCOUNTS))
        head = engine.position()
    with open_tokens(url) as tokens:
        bearer = {r: f"Bearer {tokens.create(f'{r}-1', r)}" for r in ("checker", "admin")}
    return url, head, bearer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int, dict[str, str]]]:
    """One worker, a header timeout of one second."""
    url, head, bearer = a_store(tmp_path)
    process, base = start_server(url, cache=tmp_path, options=("--header-timeout", "1"))
    try:
        yield base, head, bearer
    finally:
        process.terminate()
        process.wait(30)


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def test_a_chunked_body_is_refused_past_the_limit_and_the_rest_never_read(
    served: tuple[str, int, dict[str, str]],
) -> None:
    base, _, bearer = served
    with socket.create_connection(address(base)) as s:
        s.sendall(
            b"POST /v1/checks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + bearer["checker"].encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        s.settimeout(0.01)
        sent, answer, chunk = 0, b"", b" " * 65536
        try:
            while sent < 300 << 20 and not answer:  # 300 MiB, unless stopped
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
                with contextlib.suppress(TimeoutError):
                    answer = s.recv(4096)
        except OSError:  # the server closed the connection: the rest is never read
            pass
        s.settimeout(5)
        answer += b"" if answer else s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert sent < 32 << 20, f"{sent} bytes were taken before the refusal"


def test_a_client_slow_to_send_its_headers_is_cut_off(
    served: tuple[str, int, dict[str, str]],
) -> None:
    base, _, bearer = served
    slow = [socket.create_connection(address(base)) for _ in range(50)]
    for s in slow:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        s.settimeout(5)
    started = time.monotonic()
    assert all(s.recv(100) == b"" for s in slow), "a slow client was answered or kept"
    assert time.monotonic() - started < 4
    for s in slow:
        s.close()
    r = HTTP.get(f"{base}/v1/accounts/u-1/can/host", headers={"Authorization": bearer["checker"]})
    assert r.status_code == 200


def test_waiting_long_polls_hold_no_thread_and_wake_on_a_command(
    served: tuple[str, int, dict[str, str]],
) -> None:
    """200 requests wait on /v1/changes (more than the thread pool has threads); checks and
    a command still go through at once, and the command wakes every waiting request."""
    base, head, bearer = served
    waiting: list[socket.socket] = []
    for _ in range(200):
        s = socket.create_connection(address(base))
        s.sendall(
            f"GET /v1/changes?after={head}&wait=20 HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {bearer['checker']}\r\n\r\n".encode()
        )
        waiting.append(s)
    time.sleep(0.5)
    with httpx.Client(base_url=base, headers={"Authorization": bearer["checker"]}) as c:
        for a in ACCOUNTS:
            started = time.monotonic()
            assert c.get(f"/v1/accounts/{a}/can/host").status_code == 200
            assert c.get(f"/v1/accounts/{a}/can/host?at=2021-01-01").status_code == 200
            assert time.monotonic() - started < 1.0
    command = {
        "command": "revoke_hosting",
        "account_id": "u-7",
        "reason": "x",
        "effective_at": "2020-06-01",
    }
    started = time.monotonic()
    r = HTTP.post(f"{base}/v1/commands", json=command, headers={"Authorization": bearer["admin"]})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied"
    for s in waiting:
        s.settimeout(10)
        answer = b""
        while b'"next"' not in answer:
            answer += s.recv(65536)
        assert b'"account_id":"u-7"' in answer and b'"capability":"host"' in answer
        s.close()
    assert time.monotonic() - started < 10


def test_a_busy_port_is_one_line_naming_it_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [CLI, "--db", f"sqlite:///{tmp_path / 's.db'}", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port}")


def test_metrics_count_the_whole_server_whichever_worker_answers(tmp_path: Path) -> None:
    url, _, bearer = a_store(tmp_path)
    process, base = start_server(url, workers=2, cache=tmp_path)
    try:
        for a in ACCOUNTS:  # a new connection each: both workers answer some
            HTTP.get(
                f"{base}/v1/accounts/{a}/can/host", headers={"Authorization": bearer["checker"]}
            )
        time.sleep(1.2)  # each worker sets its gauges twice a second
        pids: set[str] = set()
        for _ in range(8):
            text = HTTP.get(f"{base}/metrics").text
            total = re.search(
                r'^entitlements_checks_total\{capability="host",outcome="allowed"\} (\S+)$',
                text,
                re.M,
            )
            assert total is not None and float(total.group(1)) == len(ACCOUNTS), text
            pids |= set(re.findall(r'^entitlements_index_position\{pid="(\d+)"\}', text, re.M))
            assert re.search(r'^entitlements_workers\{state="following"\} 2\.0$', text, re.M)
        assert len(pids) == 2
    finally:
        process.terminate()
        process.wait(30)


def test_answers_on_a_kept_alive_connection_wait_for_no_delayed_ack(
    served: tuple[str, int, dict[str, str]],
) -> None:
    """A response written in pieces with Nagle's algorithm on waits for the client's
    delayed acknowledgement, about 40 ms each (what uvicorn's multi-worker socket did):
    the median of 30 answers in a row on one connection stays far below that."""
    base, _, bearer = served
    with socket.create_connection(address(base)) as s:
        took = []
        for i in range(30):
            started = time.perf_counter()
            s.sendall(
                f"GET /v1/accounts/{ACCOUNTS[i % 20]}/can/host HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: {bearer['checker']}\r\n\r\n".encode()
            )
            answer = b""
            while not answer.endswith(b'"as_known_at":null}'):
                answer += s.recv(65536)
            took.append(time.perf_counter() - started)
    assert sorted(took)[15] < 0.015, sorted(took)
