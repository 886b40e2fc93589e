"""`what-if` of a region rule against the real fan-out of the same rule, same run.

    python -m benchmarks.what_if_figures --accounts 50000 [--rounds 2] [--json what_if.json]

The store (SQLite) is built by real `apply` commands (benchmarks.whole_process's day in the
life: half the accounts in CN, half in US, half of each free). The rule is
`free_hosting_suspended` in US, recorded after the log. Each round, alternating:
- fan-out: a copy of the store's file, opened (not timed), then `apply` of the rule timed:
  the rule decided, every US account reconciled, the events sealed and saved;
- what-if: `what_if()` of the same rule on the store itself, timed whole: the log copied
  into a `memory://` engine and its index built, the rule applied there (the same fan-out,
  in memory), the touched accounts compared capability by capability;
- what-if of a command that is rejected (a lift of a rule never applied): the price of
  the copy alone.
The ratio is what-if seconds / fan-out seconds (the issue's goal: within 2x).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.migrate_figures import build  # the store of n accounts made by `apply`
from benchmarks.whole_process import emit
from entitlements.application.engine import Engine
from entitlements.application.what_if import what_if
from entitlements.domain.commands import parse_commands, with_derived_id

RULE = {
    "command": "apply_region_rule",
    "region": "US",
    "rule": "free_hosting_suspended",
    "effective_at": "2021-01-01",
}
NOTHING = {**RULE, "command": "lift_region_rule", "rule": "direct_sales_closed"}


def fan_out(url: str, folder: Path, i: int) -> tuple[float, int]:
    """Seconds of the real `apply` of the rule on a copy of the store; events it recorded."""
    copy = folder / f"copy-{i}.db"
    shutil.copyfile(url.removeprefix("sqlite:///"), copy)
    with Engine(f"sqlite:///{copy}") as engine:
        before = engine.position()
        start = time.perf_counter()
        (result,) = engine.apply([RULE])
        seconds = time.perf_counter() - start
        assert result.status == "applied", result.reason
        recorded = engine.position() - before
    copy.unlink()
    return seconds, recorded


def hypothetical(url: str, item: dict[str, Any]) -> tuple[float, Any]:
    """Seconds of the what-if of `item` on the store (opened before, not timed)."""
    (cmd,) = parse_commands([(1, item)], "item", future=True)
    with Engine(url, must_exist=True) as engine:
        start = time.perf_counter()
        answer = what_if(engine, [(1, with_derived_id(cmd))])
        return time.perf_counter() - start, answer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, records, build_seconds = build(args.accounts, folder)
        real, wi, copy_only, events = [], [], [], 0
        changes, touched = 0, 0
        for i in range(args.rounds):
            seconds, events = fan_out(url, folder, i)
            real.append(seconds)
            seconds, answer = hypothetical(url, RULE)
            assert answer.results[0].status == "applied", answer.results[0].reason
            wi.append(seconds)
            changes, touched = len(answer.changes), len({c.account_id for c in answer.changes})
            seconds, nothing = hypothetical(url, NOTHING)
            assert nothing.results[0].status == "rejected" and not nothing.changes
            copy_only.append(seconds)
    fan_out_s, what_if_s = statistics.median(real), statistics.median(wi)
    figures = {
        "accounts": args.accounts,
        "records": records,
        "build_by_apply_s": round(build_seconds, 1),
        "fan_out_events": events,
        "fan_out_s": round(fan_out_s, 2),
        "what_if_s": round(what_if_s, 2),
        "what_if_copy_only_s": round(statistics.median(copy_only), 2),
        "changes": changes,
        "accounts_changed": touched,
        "ratio": round(what_if_s / fan_out_s, 2),
        "fan_out_rounds_s": [round(x, 2) for x in real],
        "what_if_rounds_s": [round(x, 2) for x in wi],
        "rounds": args.rounds,
    }
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
