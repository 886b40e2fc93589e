"""The analysts' daily-count report on a synthetic store, against same-run baselines.

    .venv/bin/python -m benchmarks.daily_counts_figures --accounts 200000 [--postgres]

Fills a store with N registrations over four regions and every plan, applies CN's
free-hosting rule through the engine (its fan-out revokes the free CN accounts), rebuilds
the read models, then times, in alternating rounds (medians):

- the report's query: a year of daily `host` counts per plan for CN, as known now and as
  known at a K before the rule, from the view `capability_day_changes`;
- the baselines: a plain `SELECT COUNT(*) FROM account_state_intervals`, and a count of
  the `capability_intervals` rows the report reads (CN, host, as known now);
- the alternative design, a table of the changes: the same query on a copy of the view's
  rows (and what writing that copy costs, which a rebuild or catch-up would pay).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy import text

from benchmarks.synthetic import fill_store, mixed_registration_events, region_opened
from entitlements.application.engine import Engine
from entitlements.domain.rules import PLANS
from projections.daily_counts import counts_per_day, day_changes
from projections.rebuild import rebuild
from projections.sql_views import sql_engine

YEAR = (date(2020, 1, 1), date(2020, 12, 31))
BEFORE_RULE = datetime(2020, 5, 1, tzinfo=UTC)


def _median_seconds(work: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--postgres", action="store_true", help="a fresh PostgreSQL store (the tests' server)"
    )
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="daily-counts-")
    try:  # the store (SQLite) and any index snapshot go in this run's folder, removed after
        with mock.patch.dict(os.environ, {"ENTITLEMENTS_CACHE": folder}):
            return _measure(args, _postgres() if args.postgres else f"sqlite:///{folder}/daily.db")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    with Engine(url, start=False) as engine:
        fill_store(engine.app, iter([region_opened("CN", datetime(2019, 12, 1, tzinfo=UTC))]))
        fill_store(engine.app, mixed_registration_events(args.accounts))
        engine.catch_up()
        engine.apply(
            [
                {
                    "command": "apply_region_rule",
                    "region": "CN",
                    "rule": "free_hosting_suspended",
                    "effective_at": "2020-05-19T00:00:00Z",
                }
            ]
        )
        started = time.perf_counter()
        rebuild(engine.app, engine.url)
        rebuild_seconds = time.perf_counter() - started
    sql = sql_engine(url)

    def report(known: datetime | None, source: str = "capability_day_changes") -> None:
        with sql.connect() as conn:
            if source == "capability_day_changes":
                changes = day_changes(conn, "CN", "host", known, YEAR[1])
            else:  # the same query on the copied table
                changes = day_changes_from(conn, source, known)
            counts_per_day(changes, *YEAR, PLANS)

    def baseline() -> None:
        with sql.connect() as conn:
            conn.execute(text("SELECT COUNT(*) FROM account_state_intervals")).scalar_one()

    def rows_read() -> None:
        with sql.connect() as conn:
            conn.execute(text(ROWS_READ)).scalar_one()

    with sql.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS day_changes_copy"))
        started = time.perf_counter()
        conn.execute(text("CREATE TABLE day_changes_copy AS SELECT * FROM capability_day_changes"))
        conn.execute(
            text("CREATE INDEX ix_day_changes_copy ON day_changes_copy (region, capability)")
        )
    copy_seconds = time.perf_counter() - started

    figures: dict[str, Any] = {"accounts": args.accounts, "store": sql.dialect.name}
    rounds: dict[str, list[float]] = {
        "now": [],
        "known": [],
        "table": [],
        "baseline": [],
        "rows_read": [],
    }
    for _ in range(args.rounds):  # alternating, so the machine's noise falls on all alike
        rounds["baseline"].append(_median_seconds(baseline, 1))
        rounds["rows_read"].append(_median_seconds(rows_read, 1))
        rounds["now"].append(_median_seconds(lambda: report(None), 1))
        rounds["known"].append(_median_seconds(lambda: report(BEFORE_RULE), 1))
        rounds["table"].append(_median_seconds(lambda: report(None, "day_changes_copy"), 1))
    for name, times in rounds.items():
        figures[f"{name}_seconds"] = round(statistics.median(times), 4)
    figures["now_over_baseline"] = round(figures["now_seconds"] / figures["baseline_seconds"], 2)
    figures["now_over_rows_read"] = round(figures["now_seconds"] / figures["rows_read_seconds"], 2)
    figures["table_copy_seconds"] = round(copy_seconds, 3)
    figures["rebuild_seconds"] = round(rebuild_seconds, 2)
    with sql.connect() as conn:
        from_view = day_changes(conn, "CN", "host", None, YEAR[1])
        figures["table_agrees"] = from_view == day_changes_from(conn, "day_changes_copy", None)
        figures["view_rows_cn_host"] = conn.execute(
            text(
                "SELECT COUNT(*) FROM capability_day_changes "
                "WHERE region = 'CN' AND capability = 'host'"
            )
        ).scalar_one()
    sql.dispose()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


ROWS_READ = (
    "SELECT COUNT(*) FROM capability_intervals "
    "WHERE region = 'CN' AND capability = 'host' AND recorded_to IS NULL"
)


def _postgres() -> str:
    from tests.conftest import fresh_postgres_schema, postgres_available

    why_not = postgres_available()
    if why_not:
        raise SystemExit(why_not)
    return fresh_postgres_schema()


def day_changes_from(conn: Any, table: str, known: datetime | None) -> list[Any]:
    """The report's query on a table holding the view's rows (the design not chosen)."""
    from projections.daily_counts import Change, _date

    rows = conn.execute(
        text(
            f"SELECT plan, day, SUM(change) FROM {table} "
            "WHERE region = 'CN' AND capability = 'host' AND recorded_to IS NULL "
            "AND day <= :until GROUP BY plan, day ORDER BY day, plan"
        ),
        {"until": YEAR[1].isoformat() if conn.dialect.name == "sqlite" else YEAR[1]},
    )
    return [Change(plan, _date(day), int(n)) for plan, day, n in rows if n]


if __name__ == "__main__":
    main()
