"""`entitlements migrate` SQLite -> PostgreSQL, next to a bare COPY of the same rows, same run.

    python -m benchmarks.migrate_figures --accounts 20000 [--rounds 2] [--json migrate.json]

The store is built by real `apply` commands (benchmarks.whole_process's day in the life:
rules, partners, sign-ups, subscriptions, revocations). Then, alternating, each in a fresh
database of its own:
- bare: the same rows read from the SQLite file with sqlite3 and written by one binary
  `COPY` into a table eventsourcing's PostgreSQL recorder created (the same table, its keys
  and index), nothing else;
- migrate: `migrate()` as the command runs it: the source's chain walked (and its rows
  digested) in a second process started before the copy, the target checked, the rows
  copied in batches at their positions, the tokens, then the target's rows digested (by
  the server) and compared with the walk's digest;
- the same migrate with the source's walk in this process, after the copy (PARALLEL_FROM
  out of reach: what the second process buys; the `sequential_` figures).
The ratio is bare seconds / migrate seconds (1.0: as fast as the bare COPY); the copy
phase alone gets its own ratio; `verify` is what is left after the copy (the walk's rest,
the target's digest).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from benchmarks.postgres_figures import drop_databases, fresh_database
from benchmarks.whole_process import _commands, emit
from entitlements.application import migrate as migration
from entitlements.application.engine import Engine
from entitlements.application.migrate import migrate, open_log


def build(n: int, folder: Path) -> tuple[str, int, float]:
    """An SQLite store of `n` accounts made by `apply`; its URL, records and build seconds."""
    url = f"sqlite:///{folder / 'source.db'}"
    start = time.perf_counter()
    with Engine(url) as engine:
        engine.apply(_commands(n))
        records = engine.position()
    return url, records, time.perf_counter() - start


def bare_copy(source: Path, target: str) -> float:
    """Seconds to read every row with sqlite3 and COPY it, binary, in one transaction,
    into the recorder's own table (created beforehand, not timed)."""
    with open_log(target, must_exist=False) as app:
        recorder: Any = app.recorder  # eventsourcing's PostgreSQL recorder
        recorder.create_table()
        table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
    start = time.perf_counter()
    with sqlite3.connect(source) as lite, psycopg.connect(target) as pg, pg.cursor() as cur:
        rows = lite.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        )
        with cur.copy(
            f"COPY {table} (notification_id, originator_id, originator_version, topic, state) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "uuid", "int8", "text", "bytea"])
            for position, stream, version, topic, state in rows:
                copy.write_row((position, UUID(stream), version, topic, state))
    return time.perf_counter() - start


def one_round(source: str, made: list[str]) -> dict[str, Any]:
    """bare, then migrate (the source's walk in a second process beside the copy), then
    migrate with the walk in this process after the copy (PARALLEL_FROM out of reach)."""
    file = Path(source.removeprefix("sqlite:///"))
    bare = bare_copy(file, fresh_database("migrate_bare", made))
    figures: dict[str, Any] = {"bare": bare}
    for name, parallel_from in (("", migration.PARALLEL_FROM), ("sequential_", 10**18)):
        saved, migration.PARALLEL_FROM = migration.PARALLEL_FROM, parallel_from
        try:
            start = time.perf_counter()
            done = migrate(source, fresh_database("migrate_to", made))
            figures[f"{name}whole"] = time.perf_counter() - start
        finally:
            migration.PARALLEL_FROM = saved
        figures.update({f"{name}{k}": v for k, v in done.seconds.items()})
        assert done.copied == done.receipt["position"]
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (medians)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    made: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        source, records, built = build(args.accounts, Path(tmp))
        try:
            rounds = [one_round(source, made) for _ in range(args.rounds)]
        finally:
            drop_databases(made)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    figures = {
        "accounts": args.accounts,
        "records": records,
        "build_by_apply_s": round(built, 2),
        "rounds": len(rounds),
        "bare_copy_s": round(med["bare"], 3),
        "bare_copy_records_per_s": round(records / med["bare"]),
        "migrate_s": round(med["whole"], 3),
        "migrate_records_per_s": round(records / med["whole"]),
        "migrate_phases_s": {k: round(med[k], 3) for k in ("copy", "verify")},
        "ratio": round(med["bare"] / med["whole"], 2),
        "ratio_copy_phase": round(med["bare"] / med["copy"], 2),
        "sequential_walks_s": round(med["sequential_whole"], 3),
        "sequential_walks_verify_s": round(med["sequential_verify"], 3),
        "ratio_sequential_walks": round(med["bare"] / med["sequential_whole"], 2),
        "every_round": [{k: round(v, 3) for k, v in r.items()} for r in rounds],
    }
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
