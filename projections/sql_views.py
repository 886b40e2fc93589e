"""Writing the SQL read models: rows recomputed for the accounts a batch of events
touched, with the tracking position, in one transaction (exactly once)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, delete, insert, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine as SqlEngine

from entitlements.rules import fold_account
from projections.check_index import CheckIndex
from projections.facts import LogFacts
from projections.tables import (
    CURRENT,
    ReadModelTables,
    capabilities_now_sql,
    define_tables,
    tracking,
)
from projections.timeline import EMPTY_REGION, capability_intervals

CHUNK = 500  # account ids per DELETE ... IN (...)


def sql_engine(url: str) -> SqlEngine:
    """SQLAlchemy engine on the same database as the log (psycopg 3 for PostgreSQL)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


class SqlReadModel:
    """The `accounts` and `capability_intervals` tables of one generation, and its tracking."""

    def __init__(self, engine: SqlEngine, name: str = "read_models", suffix: str = "") -> None:
        self.engine = engine
        self.name = name
        self.tables: ReadModelTables = define_tables(suffix)

    def create(self) -> None:
        self.tables.metadata.create_all(self.engine)
        tracking.metadata.create_all(self.engine)
        if not self.tables.suffix and "capabilities_now" not in inspect(self.engine).get_view_names():
            with self.engine.begin() as conn:
                conn.exec_driver_sql(capabilities_now_sql(self.engine))

    def position(self, conn: Connection | None = None) -> int:
        def read(c: Connection) -> int:
            row = c.execute(select(tracking.c.position).where(tracking.c.name == self.name)).first()
            return row[0] if row else 0

        if conn is not None:
            return read(conn)
        with self.engine.connect() as c:
            return read(c)

    def write(self, facts: LogFacts, index: CheckIndex, accounts: Iterable[str], position: int) -> bool:
        """Replace the rows of `accounts` and move tracking to `position`, atomically.
        A position already reached (a replayed delivery) changes nothing: returns False."""
        accounts = sorted(set(accounts))
        with self.engine.begin() as conn:
            if self.position(conn) >= position:
                return False
            a, i = self.tables.accounts, self.tables.intervals
            for start in range(0, len(accounts), CHUNK):
                chunk = accounts[start : start + CHUNK]
                conn.execute(delete(i).where(i.c.account_id.in_(chunk)))
                conn.execute(delete(a).where(a.c.account_id.in_(chunk)))
            account_rows, interval_rows = [], []
            for account_id in accounts:
                region, timeline = index.accounts[account_id]
                account_rows.append(_account_row(account_id, facts))
                for r in capability_intervals(account_id, timeline, index.regions.get(region, EMPTY_REGION)):
                    interval_rows.append({
                        "account_id": r.account_id, "capability": r.capability, "allowed": r.allowed,
                        "value": r.value, "reason": r.reason, "effective_from": r.effective_from,
                        "effective_to": r.effective_to, "recorded_from": r.recorded_from,
                        "recorded_to": r.recorded_to,
                    })
            if account_rows:
                conn.execute(insert(a), account_rows)
            if interval_rows:
                conn.execute(insert(i), interval_rows)
            self._track(conn, position)
        return True

    def _track(self, conn: Connection, position: int) -> None:
        moved = conn.execute(update(tracking).where(tracking.c.name == self.name).values(position=position))
        if moved.rowcount == 0:
            conn.execute(insert(tracking).values(name=self.name, position=position))

    def swap_into_place(self, position: int) -> None:
        """Make this generation the current tables (drop the old, rename the new), with
        the current tracking at `position`, in one transaction."""
        old, new = CURRENT, self.tables
        with self.engine.begin() as conn:
            conn.exec_driver_sql("DROP VIEW IF EXISTS capabilities_now")
            for table in (old.intervals, old.accounts):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")
            for table, target in ((new.accounts, old.accounts), (new.intervals, old.intervals)):
                conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {target.name}")
            for ix in new.intervals.indexes:  # index names are per schema: take the usual names
                conn.exec_driver_sql(f"DROP INDEX {ix.name}")
            for ix in old.intervals.indexes:
                ix.create(conn)
            conn.exec_driver_sql(capabilities_now_sql(self.engine))
            conn.execute(delete(tracking).where(tracking.c.name == self.name))
            SqlReadModel(self.engine)._track(conn, position)


def _account_row(account_id: str, facts: LogFacts) -> dict[str, Any]:
    state = fold_account(facts.accounts[account_id], at=datetime.now(UTC))
    if state.registration is None:  # registered with a future effective time
        state = fold_account(facts.accounts[account_id])
    status = "suspended" if state.suspension else (
        "registration_suspended" if state.registration_suspended else "active")
    return {
        "account_id": account_id, "region": state.region, "plan": state.plan,
        "channel": state.channel, "partner": state.partner, "status": status,
        "registered_at": state.registration.effective_at if state.registration else None,
    }

