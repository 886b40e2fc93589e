"""Who-can figures (issue 20, part 2), each next to a floor measured in the same run.

    python -m benchmarks.who_can_figures --accounts 200000 --json who_can.json

A store of N accounts built by `apply` commands (9 in 10 in CN, plans mixed, CN's
`free_hosting_suspended` applied first, so free accounts are refused `host`, and every
seventh account's hosting revoked by hand), then a fresh engine (its index from the log,
as a restarted process has it) answers `who-can host --region CN`:

- the first page of 1,000, cold (the region's sorted ids made, every account encoded: the
  first who-can of a process) and warm (median of several: every later first page);
- the whole region paged by its cursor, 1,000 a page, now and at a past `at`;
- floor: the same walk over a plain dict of the same ids (a sorted list, a bisect to the
  cursor, a dict lookup per account): what paging costs with nothing of ours in it.

Figures per account extrapolate linearly to 1,000,000 (`*_at_1m`); the first page does
not grow with N (a bisect and 1,000 checks) once the region's ids are sorted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from bisect import bisect_right
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.synthetic import START, account_ids
from benchmarks.whole_process import emit
from entitlements.application.engine import Engine
from entitlements.application.who_can import Asked

PAGE = 1000
MILLION = 1_000_000


def commands(n: int) -> list[dict[str, Any]]:
    """The rule, then n registrations (9 in 10 in CN) and some manual revocations."""
    t = START
    cmds: list[dict[str, Any]] = []

    def add(**c: Any) -> None:
        nonlocal t
        t += timedelta(seconds=1)
        cmds.append({**c, "effective_at": t.isoformat(), "recorded_at": t.isoformat()})

    add(command="apply_region_rule", region="CN", rule="free_hosting_suspended")
    for i, a in enumerate(account_ids(n)):
        region = "US" if i % 10 == 9 else "CN"
        plan = ("free", "pro", "business", "enterprise")[i % 4]
        add(command="register_account", account_id=a, region=region, plan=plan, channel="online")
        if i % 7 == 0:
            add(command="revoke_hosting", account_id=a, reason="audit")
    return cmds


def walk(engine: Engine, asked: Asked) -> tuple[float, int, int]:
    """Seconds to page through the whole answer, accounts listed, pages."""
    t = time.perf_counter()
    listed = pages = 0
    cursor = None
    while True:
        page = engine.queries.who_can(asked, PAGE, cursor)
        listed += len(page.rows)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            return time.perf_counter() - t, listed, pages


def floor(ids: list[str]) -> tuple[float, float]:
    """The same walk over a plain dict: (first page seconds, whole walk seconds)."""
    allowed = {a: i % 4 != 0 for i, a in enumerate(ids)}
    ordered = sorted(allowed)

    def one_page(after: str | None) -> tuple[list[str], str | None]:
        start = bisect_right(ordered, after) if after is not None else 0
        rows: list[str] = []
        for n in range(start, len(ordered)):
            if allowed[ordered[n]]:
                rows.append(ordered[n])
                if len(rows) == PAGE:
                    return rows, ordered[n]
        return rows, None

    t = time.perf_counter()
    one_page(None)
    first = time.perf_counter() - t
    t = time.perf_counter()
    cursor: str | None = None
    while True:
        _, cursor = one_page(cursor)
        if cursor is None:
            return first, time.perf_counter() - t


def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    """Who-can's figures on a fresh engine over the store at `url`."""
    with Engine(url) as engine:
        asked = Asked("host", "CN")
        t = time.perf_counter()
        first = engine.queries.who_can(asked, PAGE)
        cold = time.perf_counter() - t
        warm = []
        for _ in range(rounds):
            t = time.perf_counter()
            engine.queries.who_can(asked, PAGE)
            warm.append(time.perf_counter() - t)
        whole, listed, pages = walk(engine, asked)
        past, listed_past, _ = walk(engine, Asked("host", "CN", at="2020-01-01T00:00:30Z"))
        denied, refused, _ = walk(engine, Asked("host", "CN", denied=True))
        agrees = all(engine.check(r.account_id, "host").allowed for r in first.rows)
        region = listed + refused
    floor_first, floor_whole = floor(account_ids(n)[:region])
    per_account = whole / max(region, 1)
    return {
        "accounts": n,
        "region_accounts": region,
        "first_page_cold_seconds": round(cold, 3),
        "first_page_warm_ms": round(statistics.median(warm) * 1000, 2),
        "floor_first_page_ms": round(floor_first * 1000, 3),
        "whole_region_seconds": round(whole, 3),
        "whole_region_listed": listed,
        "whole_region_pages": pages,
        "whole_region_at_past_seconds": round(past, 3),
        "whole_region_at_past_listed": listed_past,
        "whole_region_denied_seconds": round(denied, 3),
        "floor_whole_region_seconds": round(floor_whole, 3),
        "ratio_whole_to_floor": round(whole / floor_whole, 1) if floor_whole else None,
        "first_page_agrees_with_check": agrees,
        "whole_region_seconds_at_1m": round(per_account * MILLION, 1),
        "first_page_cold_seconds_at_1m": round(cold / max(region, 1) * MILLION, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="warm first pages timed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'who_can.db'}"
        t = time.perf_counter()
        with Engine(url) as engine:
            engine.apply(commands(args.accounts))
        built = time.perf_counter() - t
        figures = {"store": "sqlite", "setup_apply_seconds": round(built, 1)}
        figures.update(measure(url, args.accounts, args.rounds))
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
