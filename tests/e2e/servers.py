"""A real `entitlements serve` process for the HTTP tests: a free loopback port, ready when
its /healthz says so."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import CLI


def fresh_connections(**options: Any) -> httpx.Client:
    """A client that opens a new connection for every request, so that either of a server's
    workers may answer. Make one and send many requests through it: every httpx client
    builds an SSL context (about 20 ms of CPU), and a client per request (`httpx.get`) cost
    the suite tens of seconds. One per thread."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), **options)


#: The test thread's client (see `fresh_connections`).
HTTP = fresh_connections(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    url: str,
    workers: int = 1,
    cache: Path | None = None,
    options: tuple[str, ...] = (),
    ready: bool = True,
    port: int | None = None,
    session: bool = False,
) -> tuple[subprocess.Popen[str], str]:
    """Start the server on the store at `url` (with more `serve` options); return the
    process and its base URL once /healthz answers 200 (a minute at most); when not
    `ready` (a store that is down: the server starts anyway), once it answers at all.
    `port`: that one (a restart); `session`: in a process group of its own (os.killpg)."""
    env = {**os.environ, "ENTITLEMENTS_DB": url}
    if cache is not None:
        env["ENTITLEMENTS_CACHE"] = str(cache)
    port = port or free_port()
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", str(workers), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=session,
    )
    base = f"http://127.0.0.1:{port}"
    answers = (200,) if ready else (200, 503)
    deadline = time.monotonic() + 60
    while True:
        try:
            if HTTP.get(f"{base}/healthz", timeout=1).status_code in answers:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(
                f"the server did not start: {server.stderr.read() if server.stderr else ''}"
            )
        time.sleep(0.2)


def worker_pids(process: Any) -> set[int]:
    """The server's worker processes: its main process's children (Linux's /proc)."""
    return {
        int(pid)
        for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    }
