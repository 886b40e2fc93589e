"""The SQL read models analysts query (SQLAlchemy Core), and the projection's tracking row.

- `accounts`: one row per account, its current region, plan, channel, partner and status.
- `capability_intervals`: what each capability was, over which effective times
  [effective_from, effective_to) and while we believed it [recorded_from, recorded_to);
  NULL `*_to` means open-ended.
- `capabilities_now`: a view over the intervals: what holds now, as known now. Exact at
  any moment, including when a future-effective event's time arrives.
- `projection_tracking`: the log position each read model reflects, written in the same
  transaction as its rows, so a replayed delivery changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Engine as SqlEngine


@dataclass(frozen=True)
class ReadModelTables:
    """One generation of the read-model tables (a rebuild writes a fresh one, then swaps)."""

    metadata: MetaData
    accounts: Table
    intervals: Table
    suffix: str


def define_tables(suffix: str = "") -> ReadModelTables:
    md = MetaData()
    accounts = Table(
        f"accounts{suffix}",
        md,
        Column("account_id", String(64), primary_key=True),
        Column("region", String(2), nullable=False, index=True),
        Column("plan", String(16), nullable=False),
        Column("channel", String(16), nullable=False),
        Column("partner", String(200)),
        Column("status", String(32), nullable=False),
        Column("registered_at", DateTime(timezone=True), nullable=False),
    )
    intervals = Table(
        f"capability_intervals{suffix}",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("account_id", String(64), nullable=False),
        Column("capability", String(32), nullable=False),
        Column("allowed", Boolean, nullable=False),
        Column("value", Integer),
        Column("reason", String, nullable=False),
        Column("effective_from", DateTime(timezone=True), nullable=False),
        Column("effective_to", DateTime(timezone=True)),
        Column("recorded_from", DateTime(timezone=True), nullable=False),
        Column("recorded_to", DateTime(timezone=True)),
        Index(f"ix_intervals{suffix}_account", "account_id"),
        Index(f"ix_intervals{suffix}_capability", "capability", "recorded_to"),
    )
    return ReadModelTables(md, accounts, intervals, suffix)


tracking_metadata = MetaData()
tracking = Table(
    "projection_tracking",
    tracking_metadata,
    Column("name", String(64), primary_key=True),
    Column("position", Integer, nullable=False),
)

CURRENT = define_tables()


def capabilities_now_sql(engine: SqlEngine) -> str:
    """CREATE VIEW capabilities_now, compiled for the engine's dialect."""
    i = CURRENT.intervals
    now = (
        func.now()
        if engine.dialect.name == "postgresql"
        else func.strftime("%Y-%m-%d %H:%M:%f", "now")
    )
    query = select(
        i.c.account_id,
        i.c.capability,
        i.c.allowed,
        i.c.value,
        i.c.reason,
        i.c.effective_from,
        i.c.effective_to,
        i.c.recorded_from,
    ).where(
        i.c.recorded_to.is_(None),
        i.c.effective_from <= now,
        or_(i.c.effective_to.is_(None), i.c.effective_to > now),
    )
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    return f"CREATE VIEW capabilities_now AS {compiled}"
