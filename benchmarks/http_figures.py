"""HTTP figures of `entitlements serve` (issue 16), each next to its floor or baseline
measured in the same run, on the same server, with the same client.

    python -m benchmarks.http_figures --accounts 20000 --seconds 5 --rounds 2 --compare-servers --json http.json
    python -m benchmarks.http_figures ... --postgres   # commit -> long-poll on PostgreSQL too

The store: N accounts (US, pro: may host) registered through `Engine.apply` in batches, as
an operator would (default: 20,000 take about 5 s), or with --no-applied inserted straight
as events (benchmarks.synthetic); the workers warm-start from its index snapshot. Servers
listen on free loopback ports. Load: `wrk` when on PATH (Lua: a random account of N per
request), else a Python client (asyncio + httpx); `--client python` forces the latter.

- check_vs_floor: GET /v1/accounts/{random}/can/host on `serve --workers W` (granian)
  against benchmarks/floor_app.py (a raw ASGI app answering a fixed decision-sized body)
  served the same way, wrk -t2 -c32; rounds alternate floor and ours, median ratio.
- p99_at_4_connections: the same pair at wrk -t1 -c4, in the same rounds.
- batch_of_100: POST /v1/checks, 100 random checks a call: decisions/s beside single checks.
- check_with_long_polls: check latency at 4 connections while N long-polls (GET
  /v1/changes?after=HEAD&wait=30) wait in the server, beside the same load without them;
  then one command must wake every one of them.
- commit_to_long_poll_{sqlite,postgres}: commands POSTed on one connection, 30-80 ms apart;
  a long-poll waiting on another gets each change: from the command's response (the
  commit is just before it) and from the POST being sent, beside the command's round trip.
- granian_vs_uvicorn (--compare-servers): the same rounds on uvicorn (httptools, uvloop),
  each server against its own floor.
- worker_memory (--worker-accounts N): `serve --workers 1` on the store built by applying a
  day's commands for N accounts (benchmarks/worker_figures.py's, built once and kept): from
  spawn to ready, and the worker's resident bytes per account after the open and after
  checking host and join of every account over HTTP, beside the same worker on an empty
  store and a dict of the ids (worker_figures.py measures the engine alone, in-process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import queue
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import httpx

from benchmarks.synthetic import START, account_ids, fill_store, region_opened, registration_events
from benchmarks.whole_process import emit
from entitlements.application.access import open_tokens
from entitlements.application.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
BATCH = 100  # checks per POST /v1/checks
APPLY_BATCH = 2000  # registrations per Engine.apply call when the store is built
MAX_CHECKS = 1000  # a batch's most
PG_ACCOUNTS = 10_000
POLL_WAIT = 30  # seconds a long-poll of the long-poll phase asks to wait
GOALS = {"ratio": 0.5, "p99_ms": 5.0, "decisions_per_s": 50_000, "poll_p99_ms": 10.0}
#: Readiness probes and one-off requests, each on a new connection (either worker answers).
#: One client for all: every httpx client builds an SSL context (about 20 ms of CPU), which a
#: probe every 20 ms would take from the server being timed.
PROBE = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


@dataclass(frozen=True)
class Shape:
    """A load's shape: wrk threads and connections (the Python client: connections)."""

    threads: int
    connections: int


THROUGHPUT = Shape(2, 32)
LATENCY = Shape(1, 4)


# -- the store ------------------------------------------------------------------------------


def fill(url: str, n: int) -> int:
    """n accounts (US, pro: host allowed) straight into the store as events, then the index
    snapshot the workers warm-start from. Returns the log position."""
    with Engine(url, start=False) as engine:
        fill_store(engine.app, iter([region_opened("US", START)]))
        fill_store(engine.app, registration_events(n, region="US", plan="pro"))
        engine.projector.start()
        engine.projector.save_snapshot()
        return engine.position()


def apply_registrations(url: str, n: int) -> int:
    """The same n accounts registered by real commands (`Engine.apply`, APPLY_BATCH a call:
    command records, ids, group commit, as an operator's store has them), then the index
    snapshot. Returns the log position."""
    with Engine(url) as engine:
        ids = account_ids(n)
        for at in range(0, n, APPLY_BATCH):
            results = engine.apply(
                {
                    "command": "register_account",
                    "account_id": a,
                    "region": "US",
                    "plan": "pro",
                    "channel": "online",
                    "effective_at": START.isoformat(),
                }
                for a in ids[at : at + APPLY_BATCH]
            )
            refused = [r for r in results if r.status != "applied"]
            assert not refused, refused[:3]
        engine.projector.save_snapshot()
        return engine.position()


def build(url: str, n: int, applied: bool) -> tuple[int, dict[str, Any]]:
    """The store, and how it was built (for "setup")."""
    t = time.perf_counter()
    head = (apply_registrations if applied else fill)(url, n)
    how = (
        f"applied: {n} register_account commands through Engine.apply, {APPLY_BATCH} a call"
        if applied
        else f"synthetic: {n} AccountRegistered events inserted straight (benchmarks.synthetic)"
    )
    return head, {"store": how, "build_seconds": round(time.perf_counter() - t, 1), "head": head}


def tokens(url: str) -> tuple[str, str]:
    store = open_tokens(url)
    return store.create("bench-checker", "checker"), store.create("bench-admin", "admin")


# -- the servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Door:
    """How to start one server on a port: its command line, its environment, and the path
    that answers 200 once a worker is up."""

    label: str
    argv: list[str]
    env: dict[str, str]
    ready: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli() -> list[str]:
    script = Path(sys.executable).parent / "entitlements"
    if script.exists():
        return [str(script)]
    found = shutil.which("entitlements")
    return [found] if found else [sys.executable, "-c", "from entitlements.cli import main; main()"]


# The floor, started by the very function `entitlements serve` calls (http/server.py: the
# same Granian settings, timeouts and worker handling), with the floor app as its target.
FLOOR_ON_GRANIAN = """\
import sys
from entitlements.http import server
server.TARGET = "benchmarks.floor_app:factory"
server.run("floor", host="127.0.0.1", port=int(sys.argv[1]), workers=int(sys.argv[2]), max_staleness=10.0)
"""


def ours_on_granian(url: str, workers: int, folder: Path) -> Callable[[int], Door]:
    def door(port: int) -> Door:
        argv = [*cli(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        env = {"ENTITLEMENTS_DB": url, "ENTITLEMENTS_CACHE": str(folder)}
        return Door("granian", [*argv, "--workers", str(workers)], env, "/healthz")

    return door


def floor_on_granian(workers: int) -> Callable[[int], Door]:
    def door(port: int) -> Door:
        argv = [sys.executable, "-c", FLOOR_ON_GRANIAN, str(port), str(workers)]
        return Door("granian floor", argv, {}, "/")

    return door


def uvicorn(target: str, port: int, workers: int, factory: bool) -> list[str]:
    """uvicorn with its fastest parser and loop, as the comparison asks."""
    flags = ["--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    where = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        *(["--factory"] if factory else []),
        target,
        *flags,
        *where,
    ]


def ours_on_uvicorn(url: str, workers: int, folder: Path) -> Callable[[int], Door]:
    def door(port: int) -> Door:
        metrics = folder / f"metrics-{port}"  # as `serve` gives its workers one folder
        metrics.mkdir()
        env = {
            "ENTITLEMENTS_DB": url,
            "ENTITLEMENTS_CACHE": str(folder),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }
        argv = uvicorn("entitlements.http.app:app_from_env", port, workers, factory=True)
        return Door("uvicorn", argv, env, "/healthz")

    return door


def floor_on_uvicorn(workers: int) -> Callable[[int], Door]:
    def door(port: int) -> Door:
        argv = uvicorn("benchmarks.floor_app:app", port, workers, factory=False)
        return Door("uvicorn floor", argv, {}, "/")

    return door


def uvicorn_missing() -> str | None:
    """Why the uvicorn comparison cannot run here, or None."""
    missing = [m for m in ("uvicorn", "uvloop", "httptools") if not importlib.util.find_spec(m)]
    return f"skipped: {', '.join(missing)} not installed (uvicorn[standard])" if missing else None


@contextmanager
def server(make: Callable[[int], Door], workers: int, folder: Path) -> Iterator[str]:
    """The server on a free loopback port; yields its base URL once every worker answers
    (a few fresh connections in a row). Stopped with SIGTERM, its process group killed if
    it does not stop."""
    port = free_port()
    door = make(port)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **door.env}
    log = open(folder / f"server-{port}.log", "w+")  # noqa: SIM115 - read back on failure
    proc = subprocess.Popen(
        door.argv, env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, ok = time.monotonic() + 300, 0
        while ok < 4 * workers:
            try:
                ok = ok + 1 if PROBE.get(base + door.ready, timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                ok = 0
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"{door.label} did not come up: {log.read()[-2000:]}")
            time.sleep(0.05 if ok else 0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# -- load: wrk, or a bounded Python client ----------------------------------------------------

LUA = """
local n, token, kind = {n}, "{token}", "{kind}"
local headers = {{["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}}
local counter = 0
setup = function(thread) counter = counter + 1; thread:set("seed", counter) end
init = function(args) math.randomseed(os.time() * 1000 + seed) end
request = function()
  if kind == "can" then
    return wrk.format("GET", string.format("/v1/accounts/acct-%07d/can/host", math.random(0, n - 1)), headers)
  end
  local parts = {{}}
  for i = 1, {batch} do
    parts[i] = string.format('{{"account_id":"acct-%07d","capability":"host"}}', math.random(0, n - 1))
  end
  return wrk.format("POST", "/v1/checks", headers, '{{"checks":[' .. table.concat(parts, ",") .. ']}}')
end
"""

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(
    base: str, token: str, kind: str, n: int, seconds: float, shape: Shape, folder: Path
) -> dict[str, Any]:
    script = folder / f"{kind}.lua"
    script.write_text(LUA.format(n=n, token=token, kind=kind, batch=BATCH))
    out = subprocess.run(
        [
            "wrk",
            f"-t{shape.threads}",
            f"-c{shape.connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {
        p: float(v) * UNITS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    errors += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {
        "requests_per_s": round(rps),
        "p50_ms": round(pct.get("50", 0.0), 2),
        "p99_ms": round(pct.get("99", 0.0), 2),
        "errors": errors,
    }


async def python_load(
    base: str, token: str, kind: str, n: int, seconds: float, connections: int
) -> dict[str, Any]:
    """What run_wrk measures, from asyncio + httpx (when wrk is missing: CI)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10, limits=limits
    ) as client:
        start = time.perf_counter()

        async def one(k: int) -> None:
            nonlocal errors
            rng = random.Random(k)
            while (t := time.perf_counter()) < start + seconds:
                if kind == "can":
                    r = await client.get(f"/v1/accounts/acct-{rng.randrange(n):07d}/can/host")
                else:
                    ids = (f"acct-{rng.randrange(n):07d}" for _ in range(BATCH))
                    checks = [{"account_id": a, "capability": "host"} for a in ids]
                    r = await client.post("/v1/checks", json={"checks": checks})
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        await asyncio.gather(*(one(k) for k in range(connections)))
        elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies) or [0.0]
    return {
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "errors": errors,
    }


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass(frozen=True)
class Bench:
    """What every load of a run shares: the client, the world, the tokens, the folder."""

    tool: str  # "wrk" or "python"
    token: str
    admin: str
    accounts: int
    seconds: float
    rounds: int
    folder: Path

    def load(self, base: str, kind: str, shape: Shape, seconds: float = 0.0) -> dict[str, Any]:
        seconds = seconds or self.seconds
        if self.tool == "wrk":
            return run_wrk(base, self.token, kind, self.accounts, seconds, shape, self.folder)
        return asyncio.run(
            python_load(base, self.token, kind, self.accounts, seconds, shape.connections)
        )

    def describe(self, shape: Shape) -> str:
        if self.tool == "wrk":
            return f"wrk -t{shape.threads} -c{shape.connections} --latency, a random account per request"
        return f"python (asyncio + httpx), {shape.connections} connections"


# -- check route vs the floor, alternating rounds ---------------------------------------------


def alternate(bench: Bench, pairs: dict[str, tuple[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Rounds of floor then ours, at 32 connections then at 4, on every server in turn: the
    machine's noise falls on both sides of every ratio."""
    if bench.seconds >= 2:  # warm-up (caches, connections, the workers' JIT-less paths)
        for floor, ours in pairs.values():
            bench.load(floor, "can", THROUGHPUT, 2)
            bench.load(ours, "can", THROUGHPUT, 2)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in pairs}
    for _ in range(bench.rounds):
        for name, (floor, ours) in pairs.items():
            f32 = bench.load(floor, "can", THROUGHPUT)
            o32 = bench.load(ours, "can", THROUGHPUT)
            f4 = bench.load(floor, "can", LATENCY)
            o4 = bench.load(ours, "can", LATENCY)
            out[name].append(
                {
                    "floor_requests_per_s": f32["requests_per_s"],
                    "check_requests_per_s": o32["requests_per_s"],
                    "ratio": round(o32["requests_per_s"] / max(f32["requests_per_s"], 1), 3),
                    "floor_p50_ms_at_4": f4["p50_ms"],
                    "floor_p99_ms_at_4": f4["p99_ms"],
                    "check_p50_ms_at_4": o4["p50_ms"],
                    "check_p99_ms_at_4": o4["p99_ms"],
                    "errors": f32["errors"] + o32["errors"] + f4["errors"] + o4["errors"],
                }
            )
    return out


def median_of(rounds: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(r[key] for r in rounds)), 3)


def against_floor(bench: Bench, server_label: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput figure: each round, and the medians."""
    ratio = median_of(rounds, "ratio")
    keys = ("floor_requests_per_s", "check_requests_per_s", "ratio", "errors")
    return {
        "server": server_label,
        "load": bench.describe(THROUGHPUT),
        "rounds": [{k: r[k] for k in keys} for r in rounds],
        "check_requests_per_s_median": median_of(rounds, "check_requests_per_s"),
        "floor_requests_per_s_median": median_of(rounds, "floor_requests_per_s"),
        "median_ratio": ratio,
        "goal": f"ratio >= {GOALS['ratio']}",
        "met": ratio >= GOALS["ratio"],
    }


def at_4(bench: Bench, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency figure: each round, and the medians."""
    keys = ("check_p50_ms_at_4", "check_p99_ms_at_4", "floor_p50_ms_at_4", "floor_p99_ms_at_4")
    p99 = median_of(rounds, "check_p99_ms_at_4")
    return {
        "load": bench.describe(LATENCY),
        "rounds": [{k.removesuffix("_at_4"): r[k] for k in keys} for r in rounds],
        "check_p50_ms_median": median_of(rounds, "check_p50_ms_at_4"),
        "check_p99_ms_median": p99,
        "floor_p99_ms_median": median_of(rounds, "floor_p99_ms_at_4"),
        "goal": f"check p99 <= {GOALS['p99_ms']} ms",
        "met": p99 <= GOALS["p99_ms"],
    }


def server_comparison(bench: Bench, measured: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """granian and uvicorn, each against its own floor, from the same alternating rounds."""
    out: dict[str, Any] = {}
    for name, rounds in measured.items():
        out[name] = {
            **{k: v for k, v in against_floor(bench, name, rounds).items() if k != "load"},
            "check_p99_ms_at_4_median": median_of(rounds, "check_p99_ms_at_4"),
            "floor_p99_ms_at_4_median": median_of(rounds, "floor_p99_ms_at_4"),
        }
        for k in ("goal", "met", "server"):
            out[name].pop(k)
    g, u = out["granian"], out["uvicorn"]
    out["uvicorn_check_over_granian_check"] = round(
        u["check_requests_per_s_median"] / max(g["check_requests_per_s_median"], 1), 3
    )
    return out


def batch(bench: Bench, base: str, single: float) -> dict[str, Any]:
    """100 checks a call against single checks (the rounds' median on the same server)."""
    b = bench.load(base, "batch", THROUGHPUT)
    decisions = b["requests_per_s"] * BATCH
    return {
        "load": bench.describe(THROUGHPUT).replace("a random account per request", "")
        + f"{BATCH} random checks a call",
        "checks_per_call": BATCH,
        "calls_per_s": b["requests_per_s"],
        "decisions_per_s": decisions,
        "call_p50_ms": b["p50_ms"],
        "call_p99_ms": b["p99_ms"],
        "errors": b["errors"],
        "baseline_single_check_requests_per_s": single,
        "ratio": round(decisions / max(single, 1), 1),
        "goal": f"decisions/s >= {GOALS['decisions_per_s']}",
        "met": decisions >= GOALS["decisions_per_s"],
    }


# -- checks beside waiting long-polls ---------------------------------------------------------


class LongPolls:
    """n connections, each with GET /v1/changes?after=HEAD&wait=W sent and its answer awaited
    on an event loop of their own (a thread), so a load can run beside them."""

    def __init__(self, base: str, token: str, after: int, n: int, wait: float) -> None:
        split = urlsplit(base)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        self.request = (
            f"GET /v1/changes?after={after}&wait={wait:g} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        self.n = n
        self.sent = 0
        self.answered: list[tuple[float, bytes]] = []  # (when, status line + body)
        self.error: BaseException | None = None
        self._opened = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> LongPolls:
        self._thread.start()
        if not self._opened.wait(120) or self.error is not None:
            raise RuntimeError(f"long-polls could not be opened: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def pending(self) -> int:
        return self.sent - len(self.answered)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        gate = asyncio.Semaphore(64)  # not all SYNs at once

        async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with gate:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(self.request)
                await writer.drain()
                self.sent += 1
                return reader, writer

        try:
            pairs = await asyncio.gather(*(open_one() for _ in range(self.n)))
        except OSError as e:
            self.error = e
            self._opened.set()
            return
        tasks = [asyncio.create_task(self._answer(r)) for r, _ in pairs]
        self._opened.set()
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        for _, w in pairs:
            w.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _answer(self, reader: asyncio.StreamReader) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"content-length:\s*(\d+)", head, re.I)
            body = await reader.readexactly(int(found.group(1))) if found else b""
            self.answered.append((time.perf_counter(), head.split(b"\r\n")[0] + b" " + body))
        except (asyncio.IncompleteReadError, ConnectionError):  # closed by the server
            self.answered.append((time.perf_counter(), b"closed"))


def server_sockets(port: int) -> dict[str, int] | None:
    """From /proc/net/tcp (Linux): the listening socket's accept queue and the server's
    established connections on `port`, with how many have bytes it has not read. Shows
    that the long-polls are in the server, not queued in front of it."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    accept_queue = established = unread = 0
    for line in lines:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) != port:
            continue
        rx = int(fields[4].split(":")[1], 16)
        if fields[3] == "0A":  # LISTEN: rx is the accept queue's length
            accept_queue += rx
        elif fields[3] == "01":  # ESTABLISHED
            established += 1
            unread += rx > 0
    return {"accept_queue": accept_queue, "connections": established, "with_unread_bytes": unread}


def wake(polls: LongPolls, base: str, admin: str) -> tuple[dict[str, Any], int]:
    """One command: every waiting long-poll must answer with its change. Returns the figure
    and the log position after the command."""
    waiting, before = polls.pending(), len(polls.answered)
    command = {
        "command": "revoke_hosting",
        "account_id": "acct-0000001",
        "reason": "wake the long-polls",
        "effective_at": "2021-01-01",
    }
    r = PROBE.post(
        f"{base}/v1/commands",
        json=command,
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    committed = time.perf_counter()
    r.raise_for_status()
    deadline = committed + 10
    while polls.pending() and time.perf_counter() < deadline:
        time.sleep(0.005)
    late = sorted((t - committed) * 1000 for t, _ in polls.answered[before:]) or [0.0]
    with_change = sum(b'"account_id":"acct-0000001"' in a for _, a in polls.answered[before:])
    return {
        "waiting": waiting,
        "answered_with_the_change": with_change,
        "p50_ms_after_commit": round(statistics.median(late), 2),
        "last_ms_after_commit": round(late[-1], 2),
    }, int(r.json()["position"])


def with_long_polls(bench: Bench, base: str, head: int, n: int) -> tuple[dict[str, Any], int]:
    """Check latency at 4 connections beside n waiting long-polls, and the same load without
    them just before (the baseline). Returns the figure and the log position after."""
    baseline = bench.load(base, "can", LATENCY)
    port = urlsplit(base).port or 80
    with LongPolls(base, bench.token, head, n, POLL_WAIT) as polls:
        time.sleep(0.5)  # every request read and in its handler
        sockets, early = server_sockets(port), n - polls.pending()
        during = bench.load(base, "can", LATENCY, min(bench.seconds, POLL_WAIT - 10))
        still = polls.pending()
        woken, head = wake(polls, base, bench.admin)
    keys = ("requests_per_s", "p50_ms", "p99_ms", "errors")
    return {
        "long_polls": n,
        "load": bench.describe(LATENCY),
        "answered_before_the_load": early,
        "server_sockets_before_the_load": sockets,
        "still_waiting_after_the_load": still,
        "check": {f"check_{k}": during[k] for k in keys},
        "baseline_without_long_polls": {f"check_{k}": baseline[k] for k in keys},
        "p99_ratio": round(during["p99_ms"] / max(baseline["p99_ms"], 0.01), 2),
        "one_command_wakes_them": woken,
        "goal": f"check p99 <= {GOALS['poll_p99_ms']} ms",
        "met": during["p99_ms"] <= GOALS["poll_p99_ms"] and still == n,
    }, head


# -- commit -> change delivered to a waiting long-poll ----------------------------------------


def ms_stats(seconds: list[float], prefix: str) -> dict[str, float]:
    ms = sorted(x * 1000 for x in seconds)
    return {
        f"{prefix}_p50_ms": round(statistics.median(ms), 2),
        f"{prefix}_p99_ms": round(percentile(ms, 0.99), 2),
        f"{prefix}_max_ms": round(ms[-1], 2),
    }


def change_latency(base: str, admin: str, checker: str, head: int, commands: int) -> dict[str, Any]:
    """Commands POSTed on one connection, 30-80 ms apart; a GET /v1/changes?wait= waiting on
    another connection (with 2 workers, maybe another worker) reports when each one's
    change arrives. Timed from the command's response (its commit is just before it: an
    arrival can even come first, a negative time) and from the POST being sent."""
    arrivals: queue.Queue[tuple[float, list[dict[str, Any]]]] = queue.Queue()
    stop = threading.Event()

    def wait_for_changes() -> None:
        after = head
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {checker}"}, timeout=30
        ) as c:
            while not stop.is_set():
                r = c.get("/v1/changes", params={"after": after, "wait": 2})
                arrived, body = time.perf_counter(), r.json()
                if body["changes"]:
                    arrivals.put((arrived, body["changes"]))
                after = body["next"]

    waiter = threading.Thread(target=wait_for_changes, daemon=True)
    waiter.start()
    from_commit, from_post, round_trips, pace = [], [], [], random.Random(1)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
        c.get("/v1/ping")  # the connection is open before the clock starts
        time.sleep(0.3)  # the waiter is waiting
        for i in range(commands):
            command = {
                "command": "revoke_hosting" if i % 2 == 0 else "restore_hosting",
                "account_id": "acct-0000000",
                "reason": f"flip {i}",
                "effective_at": "2021-01-01",
            }
            sent = time.perf_counter()
            r = c.post("/v1/commands", json=command)
            answered = time.perf_counter()
            assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied", r.text
            arrived, items = arrivals.get(timeout=30)
            assert any(x.get("account_id") == "acct-0000000" for x in items), items
            from_commit.append(arrived - answered)
            from_post.append(arrived - sent)
            round_trips.append(answered - sent)
            # the waiter asks again: flips are separate commands, not a burst, and not in
            # step with a worker's polling of the log (SQLite)
            time.sleep(pace.uniform(0.03, 0.08))
    stop.set()
    waiter.join(5)
    p50 = statistics.median(from_commit) * 1000
    return {
        "commands": commands,
        **ms_stats(from_commit, "from_commit"),
        **ms_stats(from_post, "from_post"),
        **ms_stats(round_trips, "baseline_command_round_trip"),
        "goal": "from_commit p50 <= 10 ms",
        "met": p50 <= 10,
    }


def postgres_changes(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """commit -> long-poll on a PostgreSQL store of this run's own (dropped at the end)."""
    from benchmarks.postgres_figures import drop_databases, fresh_database

    made: list[str] = []
    try:
        pg = fresh_database("bench_http", made)
        n = min(args.accounts, PG_ACCOUNTS)
        head, how = build(pg, n, args.applied)
        checker, admin = tokens(pg)
        with server(ours_on_granian(pg, args.workers, folder), args.workers, folder) as base:
            return {
                "accounts": n,
                **how,
                **change_latency(base, admin, checker, head, args.commands),
            }
    finally:
        drop_databases(made)


def worker_pid(server_pid: int) -> int:
    """The one worker process under a `serve --workers 1` (granian's child)."""
    deadline = time.monotonic() + 30
    while True:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
        if children:
            return int(children[0])
        assert time.monotonic() < deadline, "no worker process"
        time.sleep(0.05)


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def serving_worker(url: str, ids: list[str], folder: Path) -> dict[str, Any]:
    """`serve --workers 1` on the store: seconds from spawn to /healthz 200, the worker's
    resident bytes then, and after checking host and join of every id over HTTP."""
    token = open_tokens(url).create(f"bench-{os.getpid()}-{time.time_ns()}", "checker")
    port = free_port()
    argv = [*cli(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "ENTITLEMENTS_DB": url, "ENTITLEMENTS_CACHE": str(folder)}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if PROBE.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            assert proc.poll() is None and time.perf_counter() - started < 300
            time.sleep(0.02)
        up = time.perf_counter() - started
        pid = worker_pid(proc.pid)
        opened = resident(pid)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
            for i in range(0, len(ids), MAX_CHECKS // 2):  # two capabilities an account
                checks = [
                    {"account_id": a, "capability": cap}
                    for a in ids[i : i + MAX_CHECKS // 2]
                    for cap in ("host", "join")
                ]
                assert c.post("/v1/checks", json={"checks": checks}, timeout=60).is_success
        return {
            "spawn_to_ready_seconds": round(up, 2),
            "after_open": opened,
            "after_checks": resident(pid),
        }
    finally:
        proc.terminate()
        proc.wait(30)


def worker_memory(n: int, folder: Path, store: Path | None = None) -> dict[str, Any]:
    """A serving worker on the store built by applying a day's commands for n accounts
    (benchmarks/worker_figures.py builds it once and keeps it), against the same worker on
    an empty store (the app, the server and the interpreter by themselves) and a dict of the
    n ids in a fresh process: resident bytes per account after the open and after every
    account is checked (host and join), and the time from spawning `serve` to ready."""
    from benchmarks import worker_figures
    from benchmarks.index_figures import run_child

    url, built = worker_figures.applied_store(n, store)
    snapshot = worker_figures.write_snapshot(url)
    empty_url = f"sqlite:///{folder / 'empty.db'}"
    Engine(empty_url).close()
    empty = serving_worker(empty_url, [], folder)
    full = serving_worker(url, account_ids(n), folder)
    command = [sys.executable, "-m", "benchmarks.worker_figures", "--child", "floor"]
    floor = run_child([*command, "--accounts", str(n)])
    return {
        "store": {**built, "snapshot_bytes": snapshot["snapshot_bytes"]},
        "accounts": n,
        "spawn_to_ready_seconds": full["spawn_to_ready_seconds"],
        "baseline_empty_store_spawn_to_ready_seconds": empty["spawn_to_ready_seconds"],
        "resident_after_open_bytes_per_account": round(
            (full["after_open"] - empty["after_open"]) / n
        ),
        "resident_after_checks_bytes_per_account": round(
            (full["after_checks"] - empty["after_checks"]) / n
        ),
        "baseline_empty_store_resident_mb": round(empty["after_open"] / 1e6, 1),
        "floor_dict_of_ids_bytes_per_account": floor["floor_dict_of_ids_bytes_per_account"],
        "goal": "<= 300 B/account after every account is checked, <= 1 s open at 300k",
    }


# -- the run ----------------------------------------------------------------------------------


def sqlite_figures(args: argparse.Namespace, bench: Bench, url: str, head: int) -> dict[str, Any]:
    """Every figure on the SQLite store: servers up for as long as their phase needs them."""
    folder, w = bench.folder, args.workers
    figures: dict[str, Any] = {}
    with server(ours_on_granian(url, w, folder), w, folder) as ours:
        with ExitStack() as rounds_only:

            def up(make: Callable[[int], Door]) -> str:
                return rounds_only.enter_context(server(make, w, folder))

            pairs = {"granian": (up(floor_on_granian(w)), ours)}
            skipped = (
                uvicorn_missing()
                if args.compare_servers
                else "skipped: --compare-servers not given"
            )
            if args.compare_servers and not skipped:
                pairs["uvicorn"] = (up(floor_on_uvicorn(w)), up(ours_on_uvicorn(url, w, folder)))
            measured = alternate(bench, pairs)
        label = f"granian: entitlements serve --workers {w}"
        figures["check_vs_floor"] = against_floor(bench, label, measured["granian"])
        figures["p99_at_4_connections"] = at_4(bench, measured["granian"])
        single = figures["check_vs_floor"]["check_requests_per_s_median"]
        figures["batch_of_100"] = batch(bench, ours, single)
        if args.long_polls:
            polls, head = with_long_polls(bench, ours, head, args.long_polls)
            figures["check_with_long_polls"] = polls
        figures["commit_to_long_poll_sqlite"] = change_latency(
            ours, bench.admin, bench.token, head, args.commands
        )
    figures["granian_vs_uvicorn"] = (
        server_comparison(bench, measured) if "uvicorn" in measured else {"note": skipped}
    )
    return figures


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load")
    parser.add_argument("--rounds", type=int, default=2, help="floor/ours alternations")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--applied",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build the store by Engine.apply (default), or insert its events straight",
    )
    parser.add_argument(
        "--long-polls", type=int, default=500, help="waiting beside checks (0: skip)"
    )
    parser.add_argument("--commands", type=int, default=60, help="for commit -> long-poll")
    parser.add_argument("--postgres", action="store_true", help="commit -> long-poll there too")
    parser.add_argument("--compare-servers", action="store_true", help="granian vs uvicorn")
    parser.add_argument(
        "--worker-accounts",
        type=int,
        default=0,
        help="a serving worker's memory and start on an applied store of N accounts (0: skip)",
    )
    parser.add_argument(
        "--worker-store", type=Path, help="its folder (default: kept in the temp folder, by N)"
    )
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.tool = (
        args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    )
    if args.tool == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    # a PostgreSQL store's index snapshot goes in $ENTITLEMENTS_CACHE: this run's folder
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.dict(os.environ, {"ENTITLEMENTS_CACHE": tmp}),
    ):
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'http.db'}"
        head, how = build(url, args.accounts, args.applied)
        checker, admin = tokens(url)
        bench = Bench(args.tool, checker, admin, args.accounts, args.seconds, args.rounds, folder)
        figures: dict[str, Any] = {
            "setup": {
                "accounts": args.accounts,
                "workers": args.workers,
                **how,
                "seconds_per_load": args.seconds,
                "rounds": args.rounds,
                "load_tool": "wrk" if args.tool == "wrk" else "python (asyncio + httpx)",
                "servers": "each floor/ours pair stays up through the rounds, idle while "
                "another is loaded; loopback, one machine (2 cores) for servers and client",
            },
            **sqlite_figures(args, bench, url, head),
        }
        if args.postgres:
            figures["commit_to_long_poll_postgres"] = postgres_changes(args, folder)
        if args.worker_accounts:
            figures["worker_memory"] = worker_memory(
                args.worker_accounts, folder, args.worker_store
            )
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
