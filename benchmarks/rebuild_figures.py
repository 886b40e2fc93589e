"""Full rebuild against a raw read + decode of the same rows, in alternating rounds.

    python -m benchmarks.rebuild_figures --accounts 200000 --rounds 3 --json out.json

The store is whole_process's fan-out store (N free accounts registered in CN, the rule, a
revocation each: 2N + 4 events), made once (or reused: --store PATH). Each round measures,
one after the other: the raw read (eventsourcing's `select_notifications` and
`to_domain_event`, 1000 rows per select, nothing kept), a rebuild with its second process
(reading the end of the log, then inserting the rows), the raw read again, a rebuild in
one process, and one whose second process inserts only (it reads none of the log). Each with its wall time and its CPU time (this process and, for the rebuild,
its child); the ratio is the raw read's wall time over the rebuild's, as in
benchmarks/README.md: for the rebuild with two processes, the mean of the raw reads just
before and just after it (this machine's speed drifts within a minute), for the one in one
process the raw read just before it.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.synthetic import RULE_AT, START, fill_store, region_opened, registration_events
from benchmarks.whole_process import emit
from entitlements.application.engine import Engine
from projections import rebuild as rebuild_module

ALONE = 10**15  # IN_PROCESS_BELOW for a rebuild in one process


def make_store(n: int, path: Path) -> str:
    """The fan-out store of n accounts at `path` (kept if it is there already)."""
    url = f"sqlite:///{path}"
    if path.exists():
        return url
    with Engine(url, start=False) as engine:
        fill_store(engine.app, iter([region_opened("CN", START)]))
        fill_store(engine.app, registration_events(n))
        engine.projector.start()
        rule = {
            "command": "apply_region_rule",
            "region": "CN",
            "rule": "free_hosting_suspended",
            "effective_at": RULE_AT.isoformat(),
        }
        (result,) = engine.apply([rule])
        assert result.status == "applied", result.reason
    return url


def _cpu() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(fn: Callable[[], Any]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), _cpu()
    fn()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu() - cpu}


def _shown(figures: dict[str, float], raw: dict[str, float] | None = None) -> dict[str, float]:
    shown = {k: round(v, 2) for k, v in figures.items()}
    if raw is not None:  # the raw read's wall time over this one's
        shown["ratio"] = round(raw["wall_s"] / figures["wall_s"], 3)
    return shown


def rounds(url: str, count: int) -> dict[str, Any]:
    with Engine(url, start=False) as engine:
        app = engine.app
        events = app.recorder.max_notification_id() or 0

        def raw_read() -> None:
            position = 0
            while True:
                page = app.recorder.select_notifications(start=position + 1, limit=1000)
                for x in page:
                    app.mapper.to_domain_event(x)
                if len(page) < 1000:
                    return
                position = page[-1].id

        def rebuild_with(threshold: int, own_share: float = 0.6) -> Callable[[], None]:
            def run() -> None:
                saved = rebuild_module.IN_PROCESS_BELOW, rebuild_module.OWN_SHARE
                rebuild_module.IN_PROCESS_BELOW, rebuild_module.OWN_SHARE = threshold, own_share
                try:
                    assert rebuild_module.rebuild(app, url) == app.recorder.max_notification_id()
                finally:
                    rebuild_module.IN_PROCESS_BELOW, rebuild_module.OWN_SHARE = saved

            return run

        results = []
        for _ in range(count):
            raw = measured(raw_read)
            two = measured(rebuild_with(0))
            raw_after = measured(raw_read)
            one = measured(rebuild_with(ALONE))
            inserting = measured(rebuild_with(0, own_share=1.0))
            around = {k: (raw[k] + raw_after[k]) / 2 for k in raw}
            results.append(
                {
                    "raw_read_decode": _shown(raw),
                    "rebuild_two_processes": _shown(two, around),
                    "raw_read_decode_after": _shown(raw_after),
                    "rebuild_one_process": _shown(one, raw_after),
                    "rebuild_second_process_inserting_only": _shown(inserting, raw_after),
                }
            )
    return {"events": events, "rounds": results}


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
        figures = {"accounts": args.accounts, **rounds(url, args.rounds)}
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
