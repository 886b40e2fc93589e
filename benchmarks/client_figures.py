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
"""

from __future__ import annotations

import argparse
import json
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

from benchmarks.index_figures import make_store, rss
from benchmarks.synthetic import account_ids

CLI = str(Path(sys.executable).with_name("entitlements"))


def _serve(url: str) -> tuple[subprocess.Popen[str], str]:
    """`entitlements serve --workers 1` on a free loopback port, once /healthz is 200."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--workers", "1"],
        env={**os.environ, "ENTITLEMENTS_DB": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
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


def measure(n: int, commands: int, folder: Path) -> dict[str, Any]:
    from entitlements import open_engine
    from entitlements.application.access import open_tokens
    from entitlements.client import Client

    url, _ = make_store(n, folder)
    with open_tokens(url) as tokens:
        checker, admin = tokens.create("bench-c", "checker"), tokens.create("bench-a", "admin")
    server, base = _serve(url)
    try:
        before = rss()
        t = time.perf_counter()
        client = Client(base, token=checker)
        bootstrap = time.perf_counter() - t
        grown = rss() - before
        size = len(
            httpx.get(f"{base}/v1/snapshot", headers={"Authorization": f"Bearer {checker}"}).content
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
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="client-figures-") as folder:
        figures = measure(args.accounts, args.commands, Path(folder))
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
