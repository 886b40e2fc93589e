"""Why the SQL read models do not run on eventsourcing's ProjectionRunner: measured.

    python -m benchmarks.tracking_figures --accounts 20000

On one PostgreSQL store of N registrations (the runner needs the store's LISTEN/NOTIFY
subscription, which the SQLite recorder does not have), each in the same run:

- runner: the library's `ProjectionRunner` with the cheapest projection there is: its
  `process_event` only records the event's tracking row (`view.insert_tracking`), one
  transaction per event, as every `Projection` must; timed until the view reaches the head;
- ours: what `project` does before its writes: `read_log` pages into `LogFacts`, one
  tracking row per 20,000 events (projections/rebuild.py, `BATCH`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner

from benchmarks.postgres_figures import drop_databases, fresh_database
from benchmarks.synthetic import START, fill_store, region_opened, registration_events
from benchmarks.whole_process import emit
from entitlements.adapters.store import eventsourcing_env
from entitlements.application.engine import Engine, EntitlementsApplication
from projections.facts import LogFacts
from projections.log_reader import read_log
from projections.sql_views import SqlReadModel, sql_engine

BATCH = 20_000


class TrackOnly(Projection[TrackingRecorder]):
    """The least a projection does per event: record that it was processed."""

    name = "trackonly"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)


def runner_seconds(url: str, head: int) -> float:
    env = eventsourcing_env(url)
    projection_env = {k.replace("POSTGRES_", "TRACKONLY_POSTGRES_"): v for k, v in env.items()}
    started = time.perf_counter()
    with ProjectionRunner(
        application_class=EntitlementsApplication,
        projection_class=TrackOnly,
        view_class=PostgresTrackingRecorder,
        env={**env, **projection_env, "CREATE_TABLE": "y"},
    ) as runner:
        runner.wait(head, timeout=3600)
    return time.perf_counter() - started


def ours_seconds(app: Any, url: str, head: int) -> float:
    model = SqlReadModel(sql_engine(url), name="tracking_bench")
    model.create()
    started = time.perf_counter()
    facts, written = LogFacts(), 0
    for page in read_log(app, 0):
        facts.add(page)
        if facts.position - written >= BATCH or facts.position >= head:
            with model.engine.begin() as conn:
                model.track(conn, facts.position)
            written = facts.position
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    made: list[str] = []
    try:
        url = fresh_database("entitlements_tracking", made)
        with Engine(url, start=False) as engine:
            fill_store(engine.app, iter([region_opened("CN", START)]))
            fill_store(engine.app, registration_events(args.accounts))
            head = engine.position()
            ours = ours_seconds(engine.app, url, head)
        runner = runner_seconds(url, head)
    finally:
        drop_databases(made)
    return emit(
        {
            "tracking": {
                "events": head,
                "runner_events_per_s": round(head / runner),
                "ours_events_per_s": round(head / ours),
                "runner_vs_ours": round(ours / runner, 3),
            }
        },
        Path(args.json) if args.json else None,
    )


if __name__ == "__main__":
    main()
