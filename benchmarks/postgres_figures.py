"""PostgreSQL figures, each next to its baseline from the same run.

    python -m benchmarks.postgres_figures --apply-accounts 5000 --flips 200

- append: bulk `apply` on PostgreSQL vs eventsourcing's bare `save` of the same events;
- visibility: a command applied in this process -> the answer changes in a check made by
  another process that follows the log (LISTEN/NOTIFY on PostgreSQL; SQLite polling, for
  comparison). Measured from just before `apply` is called (so it includes the commit).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.whole_process import apply_vs_bare, emit
from entitlements import open_engine

SERVER = "postgresql://postgres@127.0.0.1:5432"


def fresh_database(name: str, made: list[str]) -> str:
    """A new database of this run's own (a random suffix: two runs on one server never
    meet), remembered in `made` so that the run drops it at the end."""
    import psycopg

    name = f"{name}_{secrets.token_hex(6)}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    made.append(name)
    return f"{SERVER}/{name}"


def drop_databases(made: list[str]) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def watch(url: str, account: str, interval: float, ready: Any, out: Any, stop: Any) -> None:
    """Another process: follow the log and report each flip of `host` with its time."""
    with open_engine(url) as engine:
        engine.follow(interval)
        last = engine.check(account, "host").allowed
        ready.set()
        while not stop.is_set():
            allowed = engine.check(account, "host").allowed
            if allowed != last:
                out.put(time.time())
                last = allowed
            time.sleep(0.0001)


def visibility(url: str, flips: int, interval: float) -> dict[str, Any]:
    with open_engine(url) as engine:
        engine.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "watched",
                    "region": "US",
                    "plan": "pro",
                    "channel": "online",
                    "effective_at": "2020-01-01",
                }
            ]
        )
        ctx = mp.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        watcher = ctx.Process(target=watch, args=(url, "watched", interval, ready, out, stop))
        watcher.start()
        ready.wait(60)
        latencies, applies = [], []
        for i in range(flips):
            command = "revoke_hosting" if i % 2 == 0 else "restore_hosting"
            t0 = time.time()
            engine.apply(
                [
                    {
                        "command": command,
                        "account_id": "watched",
                        "reason": f"flip {i}",
                        "effective_at": "2020-01-02",
                    }
                ]
            )
            applies.append(time.time() - t0)
            latencies.append(out.get(timeout=30) - t0)
            time.sleep(0.01)  # let the watcher settle: flips are separate commands, not a burst
        stop.set()
        watcher.join(30)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "flips": flips,
        "apply_p50_ms": round(statistics.median(applies) * 1000, 2),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--apply-accounts", type=int, default=300)
    parser.add_argument("--flips", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures["postgres_apply"] = apply_vs_bare(
                args.apply_accounts,
                Path(tmp),
                urls=(fresh_database("bench_apply", made), fresh_database("bench_bare", made)),
            )
            figures["visibility_postgres_listen_notify"] = visibility(
                fresh_database("bench_visibility", made), args.flips, 0.05
            )
            figures["visibility_sqlite_polling_5ms"] = visibility(
                f"sqlite:///{tmp}/visibility.db", args.flips, 0.005
            )
    finally:
        drop_databases(made)
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
