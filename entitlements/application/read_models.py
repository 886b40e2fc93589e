"""What the doors ask of the read models, through the application: a rebuild, a catch-up of
the SQL tables (kept, so that `catch-up --follow` reads only what is new), the tables
brought level before a report, and the snapshot files this process refused. The doors
(cli/, http/) import no projection: they reach the read models only through here."""

from __future__ import annotations

from collections.abc import Callable

from entitlements.application.engine import Engine
from entitlements.application.report import read_models_level
from projections import snapshot_digests
from projections.rebuild import Progress, Resumed, SqlProjection
from projections.rebuild import rebuild as rebuild_read_models

__all__ = [
    "Progress",
    "Resumed",
    "SqlProjection",
    "catch_up",
    "level",
    "rebuild",
    "snapshots_refused",
]


def rebuild(
    engine: Engine,
    events: Progress | None = None,
    *,
    accounts: Progress | None = None,
    resumed: Callable[[Resumed], None] | None = None,
) -> int:
    """Every read model rebuilt from the engine's log (see `projections.rebuild.rebuild`);
    the position reached."""
    return rebuild_read_models(engine.app, engine.url, events, accounts=accounts, resumed=resumed)


def catch_up(engine: Engine) -> SqlProjection:
    """The SQL read models of the engine's store, to run (and run again: each run reads the
    log past the position the tables reached)."""
    return SqlProjection.current(engine.app, engine.url)


def level(engine: Engine) -> int:
    """The SQL read models brought level with the log; how many positions they were behind."""
    return read_models_level(engine.app, engine.url)


def snapshots_refused() -> dict[str, int]:
    """Snapshot files this process refused so far, by kind (not on record, not of this
    log, not readable): counted where files are loaded, which knows nothing of metrics."""
    return dict(snapshot_digests.refused)
