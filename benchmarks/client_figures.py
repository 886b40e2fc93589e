"""The local client's figures (issue 19), each next to its baseline of the same run.

    python -m benchmarks.client_figures --accounts 100000 --commands 200 --json client.json

A store of N synthetic accounts (index_figures' store) is served by `entitlements serve
--workers 1` on loopback; in this process:

- bootstrap: `Client(url, token)` made (GET /v1/snapshot downloaded, checked and loaded,
  the stream followed): seconds, bytes downloaded and resident bytes grown, per account;
- check "now": `client.check(a, "host")` over every account, against `Engine.check` in
  this process on the same store (the baseline), the same accounts in the same order;
- command -> answer: a hosting revocation POSTed to /v1/commands, then the time until the
  client's own answer for that account says so (p50, p99 over the commands).

Bootstrap is timed against a server that has been up `--up` seconds after /healthz said
200 (a worker makes its snapshot when it starts, in the background): `Client(url)` made,
that is GET /v1/snapshot downloaded, written to a temporary file, its SHA-256, position
and chain head checked against the headers, the index loaded, the stream's thread started.

    python -m benchmarks.client_figures --clients 200 --accounts 20000 --json fanout.json

With `--clients N`: a store of N accounts built by `apply` commands (who_can_figures'),
served by `serve --workers 2`; the server's GET check latency (a loop in a process of its
own, over four connections) while registrations are POSTed at `--rate` a second, for
`--seconds`, three times: no client attached, N clients following (all in this process,
each its own stream and thread), none again (the N closed). Then every client's records
are compared with the store's log: each received every position after its snapshot's,
once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx

from benchmarks.http_figures import PROBE
from benchmarks.index_figures import make_store, rss
from benchmarks.synthetic import account_ids
from benchmarks.who_can_figures import commands as who_can_commands
from entitlements.client import Client

CLI = str(Path(sys.executable).with_name("entitlements"))


def _serve(url: str, workers: int = 1) -> tuple[subprocess.Popen[str], str]:
    """`entitlements serve --workers N` on a free loopback port, once /healthz is 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", str(workers)],
        env={**os.environ, "ENTITLEMENTS_DB": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if PROBE.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not start")


def _per_check(check: Any, ids: list[str]) -> float:
    """Seconds per `check(a, "host")`, the best of three passes over every account."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for a in ids:
            check(a, "host")
        best = min(best, (time.perf_counter() - t) / len(ids))
    return best


def _latencies(client: Any, base: str, admin: str, ids: list[str], n: int) -> list[float]:
    """Seconds from POSTing a revocation to the client's own answer changing, per command."""
    step = max(1, len(ids) // n)
    found = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as http:
        for a in ids[::step][:n]:
            command = {
                "command": "revoke_hosting",
                "account_id": a,
                "reason": "audit",
                "effective_at": "2021-01-01",
            }
            t = time.perf_counter()
            http.post("/v1/commands", json=command).raise_for_status()
            while client.check(a, "host").allowed:
                time.sleep(0.0002)
            found.append(time.perf_counter() - t)
    return found


def measure(n: int, commands: int, folder: Path, up: float = 0.0) -> dict[str, Any]:
    from entitlements import open_engine
    from entitlements.application.access import open_tokens

    url, _ = make_store(n, folder)
    with open_tokens(url) as tokens:
        checker, admin = tokens.create("bench-c", "checker"), tokens.create("bench-a", "admin")
    server, base = _serve(url)
    try:
        time.sleep(up)  # the server has been up: its snapshot made at start
        before = rss()
        t = time.perf_counter()
        client = Client(base, token=checker)
        bootstrap = time.perf_counter() - t
        grown = rss() - before
        size = len(
            PROBE.get(f"{base}/v1/snapshot", headers={"Authorization": f"Bearer {checker}"}).content
        )
        ids = account_ids(n)
        with client, open_engine(url) as engine:
            client_check, engine_check = (
                _per_check(client.check, ids),
                _per_check(engine.check, ids),
            )
            lat = _latencies(client, base, admin, ids, commands)
    finally:
        server.terminate()
        server.wait(30)
    cuts = quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else lat * 99
    return {
        "accounts": n,
        "server_up_seconds_before_bootstrap": up,
        "bootstrap_seconds": bootstrap,
        "snapshot_bytes_per_account": size / n,
        "resident_bytes_per_account": grown / n,
        "client_check_seconds": client_check,
        "engine_check_seconds": engine_check,
        "client_over_engine": client_check / engine_check,
        "command_to_answer_p50_seconds": cuts[49],
        "command_to_answer_p99_seconds": cuts[98],
        "commands": len(lat),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--up", type=float, default=5.0, help="seconds the server is up first")
    parser.add_argument("--clients", type=int, default=0, help="N clients on serve --workers 2")
    parser.add_argument("--rate", type=float, default=10.0, help="--clients: commands a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="--clients: each window")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="client-figures-") as folder:
        if args.clients:
            figures = fan_out(args, Path(folder))
        else:
            figures = measure(args.accounts, args.commands, Path(folder), args.up)
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


# -- many clients on one server (--clients N) --------------------------------------------


class _Counted(Client):
    """A Client noting every record its stream hands it (before it is applied or
    skipped) and the position of the snapshot it started from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.received: list[int] = []
        self.start = -1
        super().__init__(*args, **kwargs)

    def _download(self) -> Any:
        copy = super()._download()
        self.start = copy.position
        return copy

    def _take(self, record: Any) -> None:
        self.received.append(record["position"])
        super()._take(record)


def _check_loop(base: str, token: str, ids: list[str], seconds: float, out: Any) -> None:
    """GET /v1/accounts/{id}/can/host one after another for `seconds`, over four
    connections (so both workers answer some); every latency, put on `out` (after None,
    said when it starts)."""
    headers = {"Authorization": f"Bearer {token}"}
    https = [httpx.Client(base_url=base, headers=headers) for _ in range(4)]
    found, i = [], 0
    out.put(None)
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        t = time.perf_counter()
        got = https[i % 4].get(f"/v1/accounts/{ids[i % len(ids)]}/can/host")
        found.append(time.perf_counter() - t)
        got.raise_for_status()
        i += 1
    for http in https:
        http.close()
    out.put(found)


def _post(http: httpx.Client, account_id: str) -> int:
    """A registration POSTed to /v1/commands; the log position it reached."""
    command = {
        "command": "register_account",
        "account_id": account_id,
        "region": "US",
        "plan": "pro",
        "channel": "online",
        "effective_at": "2021-01-01",
    }
    got = http.post("/v1/commands", json=command)
    got.raise_for_status()
    return int(got.json()["position"])


def _cpu(pid: int) -> float:
    """CPU seconds (user and system) of process `pid` and its descendants so far."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(c)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
        ]
    except OSError:  # ended meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / tick + sum(map(_cpu, children))


def _window(
    base: str, tokens: tuple[str, str], ids: list[str], args: Any, tag: str, server: int
) -> Any:
    """One window: the check loop (a process of its own, so that the clients' threads in
    this one do not slow its timing) while registrations are POSTed at `args.rate` a
    second; the checks' p50 / p99, the CPU seconds the server (`server`: its pid) and
    this process (the clients) took, and the last position reached."""
    checker, admin = tokens
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    loop = context.Process(target=_check_loop, args=(base, checker, ids, args.seconds, out))
    loop.start()
    out.get(timeout=60)  # the loop has started
    cpu = _cpu(server), time.process_time()
    posted, last = 0, 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}) as http:
        ends = time.monotonic() + args.seconds
        while (now := time.monotonic()) < ends:
            last = _post(http, f"fanout-{tag}-{posted:06d}")
            posted += 1
            time.sleep(max(0.0, now + 1 / args.rate - time.monotonic()))
    lat = out.get(timeout=args.seconds + 60)
    cpu = _cpu(server) - cpu[0], time.process_time() - cpu[1]
    loop.join(30)
    cuts = quantiles(lat, n=100, method="inclusive")
    return {
        "checks": len(lat),
        "check_p50_ms": round(cuts[49] * 1e3, 3),
        "check_p99_ms": round(cuts[98] * 1e3, 3),
        "commands": posted,
        "server_cpu_seconds": round(cpu[0], 2),
        "clients_process_cpu_seconds": round(cpu[1], 2),
    }, last


def _log_positions(url: str, after: int, end: int) -> list[int]:
    """The store's log positions in (after, end], read from the store."""
    from entitlements.application.engine import Engine
    from entitlements.application.replica import records_after

    found: list[int] = []
    with Engine(url, start=False) as engine:
        while records := records_after(engine, found[-1] if found else after):
            found += [r["position"] for r in records if r["position"] <= end]
            if records[-1]["position"] >= end:
                break
    return found


def _received_all(clients: list[_Counted], url: str, end: int) -> int:
    """Every client received every log position after its snapshot's up to `end`, once,
    in order (AssertionError naming the first that did not); the records checked."""
    logs: dict[int, list[int]] = {}
    checked = 0
    for i, c in enumerate(clients):
        if c.start not in logs:
            logs[c.start] = _log_positions(url, c.start, end)
        expected = logs[c.start]
        assert expected and c.received == expected, (
            f"client {i} (from {c.start}): received {len(c.received)} records, "
            f"{len(set(c.received))} distinct, expected {len(expected)}"
        )
        checked += len(c.received)
    return checked


def _bare_streams(base: str, token: str, n: int, after: int, out: Any, stop: Any) -> None:
    """N GET /v1/stream readers on one event loop (a process of its own), from `after`:
    each notes the ids it receives, nothing checked or applied (what the streams cost the
    server, without the clients' own work on the same cores); puts None once all are
    connected, then, once `stop` is set, every reader's ids."""
    asyncio.run(_read_bare(base, token, n, after, out, stop))


async def _read_bare(base: str, token: str, n: int, after: int, out: Any, stop: Any) -> None:
    got: list[list[int]] = [[] for _ in range(n)]
    opened, connected = [0], asyncio.Event()
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": str(after)}
    timeout = httpx.Timeout(10.0, read=None)
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=timeout, limits=limits
    ) as http:

        async def read(ids: list[int]) -> None:
            async with http.stream("GET", "/v1/stream") as r:
                opened[0] += 1
                if opened[0] == n:
                    connected.set()
                async for line in r.aiter_lines():
                    if line.startswith("id: "):
                        ids.append(int(line[4:]))

        tasks = [asyncio.create_task(read(ids)) for ids in got]
        await asyncio.wait_for(connected.wait(), 120)
        out.put(None)
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.put(got)


def _streams_window(
    url: str, base: str, pair: tuple[str, str], ids: list[str], args: Any, server: int, after: int
) -> dict[str, Any]:
    """A window with N bare streams attached (`_bare_streams`); each stream's records
    checked against the log (every position after `after`, once, in order)."""
    context = multiprocessing.get_context("spawn")
    out, stop = context.Queue(), context.Event()
    readers = context.Process(
        target=_bare_streams, args=(base, pair[0], args.clients, after, out, stop)
    )
    readers.start()
    out.get(timeout=180)  # all connected
    cpu = _cpu(readers.pid or 0)
    window, end = _window(base, pair, ids, args, "streams", server)
    cpu = _cpu(readers.pid or 0) - cpu
    time.sleep(2)  # the last records on their way
    stop.set()
    got = out.get(timeout=120)
    readers.join(30)
    expected = _log_positions(url, after, end)
    for i, received in enumerate(got):
        assert received == expected, (
            f"stream {i}: received {len(received)} records, expected {len(expected)}"
        )
    return {**window, "readers_cpu_seconds": round(cpu, 2), "records_checked": sum(map(len, got))}


def fan_out(args: Any, folder: Path) -> dict[str, Any]:
    """N clients on `serve --workers 2` (the store built by `apply`): the server's check
    latency with nothing attached, N bare streams, N clients following, none again; every
    stream's and every client's records checked against the log."""
    from entitlements.application.access import open_tokens
    from entitlements.application.engine import Engine

    url = f"sqlite:///{folder / 'fanout.db'}"
    t = time.perf_counter()
    with Engine(url, start=False) as engine:
        engine.apply(who_can_commands(args.accounts))
    built = time.perf_counter() - t
    with open_tokens(url) as tokens:
        pair = (tokens.create("bench-c", "checker"), tokens.create("bench-a", "admin"))
    ids = account_ids(args.accounts)[:: max(1, args.accounts // 2000)]
    server, base = _serve(url, workers=2)
    clients: list[_Counted] = []
    try:
        time.sleep(args.up)  # both workers have made their snapshot
        alone, last = _window(base, pair, ids, args, "alone", server.pid)
        streams = _streams_window(url, base, pair, ids, args, server.pid, last)
        before, t = rss(), time.perf_counter()
        clients = [_Counted(base, token=pair[0]) for _ in range(args.clients)]
        started, grown = time.perf_counter() - t, rss() - before
        attached, end = _window(base, pair, ids, args, "attached", server.pid)
        t = time.perf_counter()
        for c in clients:
            c.wait_for(end, timeout=120)
        caught_up = time.perf_counter() - t
        for c in clients:
            c.close()
        again, _ = _window(base, pair, ids, args, "again", server.pid)
    finally:
        for c in clients:
            c.close()
        server.terminate()
        server.wait(30)
    return {
        "accounts": args.accounts,
        "store": "sqlite, built by apply",
        "setup_apply_seconds": round(built, 1),
        "clients": args.clients,
        "clients_bootstrap_seconds": round(started, 2),
        "clients_resident_bytes_each": grown // max(1, args.clients),
        "records_checked": _received_all(clients, url, end),
        "every_client_every_record_once_in_order": True,
        "clients_level_after_window_seconds": round(caught_up, 3),
        "rate_commands_per_second": args.rate,
        "window_seconds": args.seconds,
        "none_attached": alone,
        "bare_streams_attached": streams,
        "attached": attached,
        "none_again": again,
    }


if __name__ == "__main__":
    main()
