"""A catch-up of the SQL read models when little is new, against reading what is new.

    python -m benchmarks.catch_up_figures --accounts 85000 --rounds 3 --json out.json

The store is rebuild_figures' fan-out store (N free accounts registered in CN, the rule, a
revocation each: 2N + 4 events), made once (or reused: --store PATH), its read models
brought level first. Each round measures, one after the other, as a new process would (a
fresh `SqlProjection`, which is what `entitlements catch-up` and `report` make):

- `whole_log_raw`: the raw read + decode of the whole log (eventsourcing's
  `select_notifications` and `to_domain_event`, nothing kept): what a catch-up that reads
  the log from its start pays at least;
- `nothing_new`: `entitlements catch-up` with the read models at the head;
- `new_account`: one account registered (2 new events): the raw read + decode of those
  events (`raw`), then the catch-up `report` runs first (`report.read_models_level`);
- `old_account`: one of the store's accounts buys a plan (its events so far are older
  than the read models' position): the same two figures.

Each with its wall time; `raw` is the baseline of the figure beside it, from the same round.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

from benchmarks.rebuild_figures import make_store
from benchmarks.synthetic import account_ids
from benchmarks.whole_process import emit
from entitlements.application.engine import Engine
from entitlements.application.report import read_models_level
from projections.rebuild import project


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 4)


def raw_read(engine: Engine, after: int) -> Callable[[], int]:
    """The raw read + decode of the log past `after`, 1000 rows a select; returns events."""
    app = engine.app

    def read() -> int:
        position, count = after, 0
        while True:
            page = app.recorder.select_notifications(start=position + 1, limit=1000)
            for n in page:
                app.mapper.to_domain_event(n)
            count += len(page)
            if len(page) < 1000:
                return count
            position = page[-1].id

    return read


def applied(engine: Engine, command: dict[str, Any]) -> int:
    """Apply one command; returns the log position before it."""
    before = engine.position()
    (result,) = engine.apply([command])
    assert result.status == "applied", result.reason
    return before


def one_round(engine: Engine, n: int, accounts: int) -> dict[str, Any]:
    """The figures of round n (its own new account, and its own old one)."""
    url, figures = engine.url, {}
    figures["whole_log_raw"] = {"wall_s": timed(raw_read(engine, 0))}
    figures["nothing_new"] = {"wall_s": timed(lambda: project(engine.app, url))}
    register = {
        "command": "register_account",
        "account_id": f"new-{uuid4().hex[:12]}",  # a store may be reused: a new id each time
        "region": "US",
        "plan": "pro",
        "channel": "online",
        "effective_at": "2021-01-01",
    }
    old = account_ids(accounts)[(n * 7919) % accounts]
    upgrade = {
        "command": "open_subscription",
        "account_id": old,
        "plan": "business",
        "channel": "direct",
        "effective_at": "2021-01-01",
    }
    for name, command in (("new_account", register), ("old_account", upgrade)):
        before = applied(engine, command)
        events = engine.position() - before
        raw = timed(raw_read(engine, before))
        caught = timed(lambda: read_models_level(engine.app, url))
        figures[name] = {"events": events, "raw_s": raw, "wall_s": caught}
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", type=Path, help="the store to make or reuse (SQLite file)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = make_store(args.accounts, args.store or Path(tmp) / "fanout.db")
        with Engine(url) as engine:
            project(engine.app, url)  # level first: each round starts at the head
            rounds = [one_round(engine, n, args.accounts) for n in range(args.rounds)]
            figures = {"accounts": args.accounts, "events": engine.position(), "rounds": rounds}
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
