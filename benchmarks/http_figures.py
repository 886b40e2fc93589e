"""HTTP figures (`entitlements serve`), each next to its baseline measured in the same run,
on the same server, with the same client.

    python -m benchmarks.http_figures --accounts 100000 --seconds 5 --workers 2 --postgres --json http.json

A real server (`entitlements serve`, uvicorn, W workers) on a free loopback port, against a
fresh store of N synthetic accounts (SQLite file; the workers warm-start from its index
snapshot). Load tool: `wrk` when it is on PATH (Lua scripts pick a random account per
request), else a bounded Python client (asyncio + httpx.AsyncClient); `--client python`
forces the latter. The figures say which.

- throughput: GET /v1/accounts/{random}/can/host vs GET /v1/ping (a token check and nothing
  else), requests/s each and the ratio; then can/host latency p50/p99 at about half the
  maximum rate (the achieved rate is reported);
- batch: decisions/s with 100 checks per POST /v1/checks vs single can/host requests;
- changes: a command POSTed on one connection -> the change delivered to a GET
  /v1/changes?wait= waiting on another connection (with 2 workers they may land on
  different workers), p50/p99; the command's own round trip (POST to its response) beside
  it. On SQLite always, and on PostgreSQL with --postgres (a database of this run's own,
  dropped at the end; at most 10,000 accounts there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx

from benchmarks.synthetic import START, fill_store, region_opened, registration_events
from benchmarks.whole_process import emit
from entitlements.engine import Engine
from entitlements.tokens import TokenStore

BATCH = 100
CONNECTIONS = 16  # concurrent connections of the load client (both tools)
PG_ACCOUNTS = 10_000


# -- the store and the server -----------------------------------------------------------


def fill(url: str, n: int) -> int:
    """n accounts (US, pro: host allowed) straight into the store, then the index snapshot
    the workers warm-start from. Returns the log position."""
    with Engine(url, start=False) as engine:
        fill_store(engine.app, iter([region_opened("US", START)]))
        fill_store(engine.app, registration_events(n, region="US", plan="pro"))
        engine.projector.start()
        engine.projector.save_snapshot()
        return engine.position()


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


@contextmanager
def server(url: str, workers: int, cache: Path) -> Iterator[str]:
    """`entitlements serve` on a free loopback port; yields its base URL once every worker
    answers /healthz (a few fresh connections in a row)."""
    port = free_port()
    env = {**os.environ, "ENTITLEMENTS_DB": url, "ENTITLEMENTS_CACHE": str(cache)}
    log = open(cache / f"serve-{port}.log", "w+")  # noqa: SIM115 - read back on failure
    proc = subprocess.Popen(
        [*cli(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, ok = time.monotonic() + 300, 0
        while ok < 4 * workers:
            try:
                ok = ok + 1 if httpx.get(f"{base}/healthz", timeout=2).status_code == 200 else 0
            except httpx.TransportError:
                ok = 0
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"the server did not come up: {log.read()[-2000:]}")
            time.sleep(0.05 if ok else 0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- load: wrk, or a bounded Python client ----------------------------------------------

LUA = """
local n, token, kind, pause = {n}, "{token}", "{kind}", {pause}
local headers = {{["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}}
local counter = 0
setup = function(thread) counter = counter + 1; thread:set("seed", counter) end
init = function(args) math.randomseed(os.time() * 1000 + seed) end
request = function()
  if kind == "ping" then
    return wrk.format("GET", "/v1/ping", headers)
  elseif kind == "can" then
    return wrk.format("GET", string.format("/v1/accounts/acct-%07d/can/host", math.random(0, n - 1)), headers)
  else
    local parts = {{}}
    for i = 1, {batch} do
      parts[i] = string.format('{{"account_id":"acct-%07d","capability":"host"}}', math.random(0, n - 1))
    end
    return wrk.format("POST", "/v1/checks", headers, '{{"checks":[' .. table.concat(parts, ",") .. ']}}')
  end
end
if pause > 0 then delay = function() return pause end end
"""

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(
    base: str, token: str, kind: str, n: int, seconds: float, folder: Path, pause_ms: int = 0
) -> dict[str, Any]:
    script = folder / f"{kind}-{pause_ms}.lua"
    script.write_text(LUA.format(n=n, token=token, kind=kind, pause=pause_ms, batch=BATCH))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
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


async def _python_load(
    base: str, token: str, kind: str, n: int, seconds: float, rate: float | None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=10, limits=limits
    ) as client:
        start = time.perf_counter()
        end = start + seconds

        async def one(k: int) -> None:
            nonlocal errors
            rng, i = random.Random(k), 0
            while True:
                if rate:  # paced: this connection's share of a fixed schedule
                    due = start + (k + i * CONNECTIONS) / rate
                    i += 1
                    if (wait := due - time.perf_counter()) > 0:
                        await asyncio.sleep(wait)
                t = time.perf_counter()
                if t >= end:
                    return
                if kind == "ping":
                    r = await client.get("/v1/ping")
                elif kind == "can":
                    r = await client.get(f"/v1/accounts/acct-{rng.randrange(n):07d}/can/host")
                else:
                    body = {
                        "checks": [
                            {"account_id": f"acct-{rng.randrange(n):07d}", "capability": "host"}
                            for _ in range(BATCH)
                        ]
                    }
                    r = await client.post("/v1/checks", json=body)
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        await asyncio.gather(*(one(k) for k in range(CONNECTIONS)))
        elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies) or [0.0]
    return {
        "requests_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "errors": errors,
    }


def throughput(
    base: str, token: str, n: int, seconds: float, tool: str, folder: Path
) -> dict[str, Any]:
    def load(kind: str, half_of: float | None = None) -> dict[str, Any]:
        if tool == "wrk":
            if not half_of:
                return run_wrk(base, token, kind, n, seconds, folder)
            # wrk cannot fix a rate: each connection pauses between requests. A first try
            # pauses for the time a request took at the maximum rate; the second corrects
            # the pause by the latency that try saw, to aim at half the maximum rate.
            cycle = 1000 * CONNECTIONS / (half_of / 2)  # ms between requests on a connection
            pause = round(cycle / 2)
            first = run_wrk(base, token, kind, n, max(1.0, seconds / 2), folder, pause)
            latency = 1000 * CONNECTIONS / max(first["requests_per_s"], 1) - pause
            return run_wrk(base, token, kind, n, seconds, folder, max(1, round(cycle - latency)))
        return asyncio.run(
            _python_load(base, token, kind, n, seconds, half_of / 2 if half_of else None)
        )

    if seconds >= 2:
        load("can")  # warm-up (caches, connections), not reported
    ping = load("ping")
    can = load("can")
    batch = load("batch")
    half = load("can", can["requests_per_s"])
    return {
        "can_host": {
            **can,
            "baseline_ping": ping,
            "ratio": round(can["requests_per_s"] / max(ping["requests_per_s"], 1), 2),
        },
        "can_host_at_half_rate": {
            **half,
            "max_requests_per_s": can["requests_per_s"],
            "fraction_of_max": round(half["requests_per_s"] / max(can["requests_per_s"], 1), 2),
        },
        "batch": {
            "checks_per_call": BATCH,
            "calls_per_s": batch["requests_per_s"],
            "decisions_per_s": batch["requests_per_s"] * BATCH,
            "call_p50_ms": batch["p50_ms"],
            "errors": batch["errors"],
            "baseline_single_decisions_per_s": can["requests_per_s"],
            "ratio": round(batch["requests_per_s"] * BATCH / max(can["requests_per_s"], 1), 1),
        },
    }


# -- command -> change delivered to a waiting request -----------------------------------


def change_latency(base: str, admin: str, checker: str, head: int, commands: int) -> dict[str, Any]:
    """Commands POSTed on one connection, 30-80 ms apart; a GET /v1/changes?wait= waiting on
    another connection reports when each one's change arrives."""
    arrivals: queue.Queue[tuple[float, list[dict[str, Any]]]] = queue.Queue()
    stop = threading.Event()

    def wait_for_changes() -> None:
        after = head
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {checker}"}, timeout=30
        ) as c:
            while not stop.is_set():
                body = c.get("/v1/changes", params={"after": after, "wait": 2}).json()
                if body["changes"]:
                    arrivals.put((time.perf_counter(), body["changes"]))
                after = body["next"]

    waiter = threading.Thread(target=wait_for_changes, daemon=True)
    waiter.start()
    latencies, round_trips, pace = [], [], random.Random(1)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
        c.get("/v1/ping")  # the connection is open before the clock starts
        time.sleep(0.3)
        for i in range(commands):
            command = {
                "command": "revoke_hosting" if i % 2 == 0 else "restore_hosting",
                "account_id": "acct-0000000",
                "reason": f"flip {i}",
                "effective_at": "2021-01-01",
            }
            t0 = time.perf_counter()
            r = c.post("/v1/commands", json=command)
            round_trips.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied", r.text
            arrived, items = arrivals.get(timeout=30)
            assert any(x.get("account_id") == "acct-0000000" for x in items), items
            latencies.append(arrived - t0)
            # the waiter asks again: flips are separate commands, not a burst, and not in
            # step with a worker's polling of the log (SQLite)
            time.sleep(pace.uniform(0.03, 0.08))
    stop.set()
    waiter.join(5)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "commands": commands,
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
        "baseline_command_round_trip_p50_ms": round(statistics.median(round_trips) * 1000, 2),
    }


# -- the run --------------------------------------------------------------------------------


def tokens(url: str) -> tuple[str, str]:
    store = TokenStore(url)
    return store.create("bench-checker", "checker"), store.create("bench-admin", "admin")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    global CONNECTIONS
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each load phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--commands", type=int, default=30, help="commands for the change latency")
    parser.add_argument(
        "--postgres", action="store_true", help="also the change latency on PostgreSQL"
    )
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="of the load client")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    CONNECTIONS = args.connections
    tool = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if tool == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH")
    figures: dict[str, Any] = {
        "setup": {
            "accounts": args.accounts,
            "workers": args.workers,
            "seconds_per_phase": args.seconds,
            "connections": args.connections,
            "load_tool": "wrk -t1 (Lua: random account per request)"
            if tool == "wrk"
            else "python (asyncio + httpx.AsyncClient)",
        },
    }
    # a PostgreSQL store's index snapshot goes in $ENTITLEMENTS_CACHE: this run's folder
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.dict(os.environ, {"ENTITLEMENTS_CACHE": tmp}),
    ):
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'http.db'}"
        t = time.perf_counter()
        head = fill(url, args.accounts)
        figures["setup"]["fill_seconds"] = round(time.perf_counter() - t, 1)
        checker, admin = tokens(url)
        with server(url, args.workers, folder) as base:
            figures.update(throughput(base, checker, args.accounts, args.seconds, tool, folder))
            figures["changes_sqlite"] = change_latency(base, admin, checker, head, args.commands)
        if args.postgres:
            from benchmarks.postgres_figures import drop_databases, fresh_database

            made: list[str] = []
            try:
                pg = fresh_database("bench_http", made)
                n = min(args.accounts, PG_ACCOUNTS)
                head = fill(pg, n)
                checker, admin = tokens(pg)
                with server(pg, args.workers, folder) as base:
                    figures["changes_postgres"] = {
                        "accounts": n,
                        **change_latency(base, admin, checker, head, args.commands),
                    }
            finally:
                drop_databases(made)
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
