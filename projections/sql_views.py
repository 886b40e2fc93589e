"""Writing the SQL read models: rows recomputed for the accounts a batch of events
touched, with the tracking position, in one transaction (exactly once)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, create_engine, delete, insert, inspect, select, text, update
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
from projections.timeline import capability_intervals

CHUNK = 500  # account ids per DELETE ... IN (...)


def sql_engine(url: str) -> SqlEngine:
    """SQLAlchemy engine on the same database as the log (psycopg 3 for PostgreSQL)."""
    from entitlements.store import sqlalchemy_url  # the one place store URLs are normalised

    engine = create_engine(sqlalchemy_url(url))
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
        if (
            not self.tables.suffix
            and "capabilities_now" not in inspect(self.engine).get_view_names()
        ):
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

    def write(
        self, facts: LogFacts, index: CheckIndex, accounts: Iterable[str], position: int
    ) -> bool:
        """Replace the rows of `accounts` and move tracking to `position`, atomically.
        A position already reached (a replayed delivery) changes nothing: returns False."""
        with self.engine.begin() as conn:
            if self.position(conn) >= position:
                return False
            self.replace_rows(conn, facts, index, sorted(set(accounts)))
            self.track(conn, position)
        return True

    def replace_rows(
        self, conn: Connection, facts: LogFacts, index: CheckIndex, accounts: list[str]
    ) -> None:
        """Delete and insert the rows of these accounts (driver-level executemany: the
        per-row parameter processing of Core inserts costs more than the database)."""
        a, i = self.tables.accounts, self.tables.intervals
        for start in range(0, len(accounts), CHUNK):
            chunk = accounts[start : start + CHUNK]
            conn.execute(delete(i).where(i.c.account_id.in_(chunk)))
            conn.execute(delete(a).where(a.c.account_id.in_(chunk)))
        when = self._time_param
        account_rows, interval_rows = [], []
        for account_id in accounts:
            timeline, region = index.timelines(account_id)
            row = _account_row(account_id, facts)
            account_rows.append((*row[:-1], when(row[-1])))
            for r in capability_intervals(account_id, timeline, region):
                interval_rows.append(
                    (
                        r.account_id,
                        r.capability,
                        r.allowed,
                        r.value,
                        r.reason,
                        when(r.effective_from),
                        when(r.effective_to),
                        when(r.recorded_from),
                        when(r.recorded_to),
                    )
                )
        if account_rows:
            conn.exec_driver_sql(self._insert_sql(a, ACCOUNT_COLUMNS), account_rows)
        if interval_rows:
            conn.exec_driver_sql(self._insert_sql(i, INTERVAL_COLUMNS), interval_rows)

    def _insert_sql(self, table: Any, columns: tuple[str, ...]) -> str:
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"

    def _time_param(self, t: datetime | None) -> Any:
        """Times as SQLAlchemy's DateTime stores them: text on SQLite, timestamptz elsewhere."""
        if t is None or self.engine.dialect.name != "sqlite":
            return t
        return _sqlite_time(t)

    def track(self, conn: Connection, position: int, name: str | None = None) -> None:
        name = name or self.name
        moved = conn.execute(
            update(tracking).where(tracking.c.name == name).values(position=position)
        )
        if moved.rowcount == 0:
            conn.execute(insert(tracking).values(name=name, position=position))

    def counter(self, name: str, conn: Connection | None = None) -> int | None:
        """A named number kept beside the tracking position (a rebuild's target and cursor)."""

        def read(c: Connection) -> int | None:
            row = c.execute(select(tracking.c.position).where(tracking.c.name == name)).first()
            return row[0] if row else None

        if conn is not None:
            return read(conn)
        with self.engine.connect() as c:
            return read(c)

    def exists(self) -> bool:
        """Whether both tables of this generation, and the tracking table, are there."""
        names = set(inspect(self.engine).get_table_names())
        return {self.tables.accounts.name, self.tables.intervals.name, tracking.name} <= names

    def recreate(self, counters: dict[str, int]) -> None:
        """Start this generation afresh, in one transaction: drop whatever an earlier attempt
        left (tables, tracking rows), free the names it needs if the current tables still
        carry them, create it empty and record `counters` beside it."""
        with self.engine.begin() as conn:
            _ddl_in_transaction(conn)
            for table in (self.tables.intervals, self.tables.accounts):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(conn, table.name)}")
            tracking.metadata.create_all(conn)
            conn.execute(delete(tracking).where(tracking.c.name.startswith(self.name)))
            adopt_names(conn, CURRENT, formerly=self.tables)
            self.tables.metadata.create_all(conn)
            for name, value in counters.items():
                self.track(conn, value, name)

    def repair(self) -> None:
        """Create any index of this generation that a crash left out (SQLite runs a
        `create_all` outside any transaction)."""
        with self.engine.begin() as conn:
            adopt_names(conn, self.tables, formerly=self.tables)

    def swap_into_place(self, position: int) -> None:
        """Make this generation the current tables (drop the old, rename the new, give their
        indexes, keys and sequences the current names, so the next rebuild finds its own
        names free), with the current tracking at `position`, in one transaction."""
        old, new = CURRENT, self.tables
        with self.engine.begin() as conn:
            _ddl_in_transaction(conn)
            conn.exec_driver_sql("DROP VIEW IF EXISTS capabilities_now")
            for table in (old.intervals, old.accounts):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(conn, table.name)}")
            for table, target in ((new.accounts, old.accounts), (new.intervals, old.intervals)):
                conn.exec_driver_sql(
                    f"ALTER TABLE {_quote(conn, table.name)} RENAME TO {_quote(conn, target.name)}"
                )
            adopt_names(conn, old, formerly=new)
            conn.exec_driver_sql(capabilities_now_sql(self.engine))
            conn.execute(delete(tracking).where(tracking.c.name.startswith(self.name)))
            SqlReadModel(self.engine).track(conn, position)


def adopt_names(conn: Connection, tables: ReadModelTables, formerly: ReadModelTables) -> None:
    """Give the tables of a generation the index, primary-key and (PostgreSQL) sequence
    names `define_tables` gives them, where they still carry those of `formerly` (a renamed
    table keeps its old ones); create any index missing. Tables not there are skipped."""
    for table, old in (
        (tables.accounts, formerly.accounts),
        (tables.intervals, formerly.intervals),
    ):
        if not inspect(conn).has_table(table.name):
            continue
        _adopt_index_names(conn, table)
        if conn.dialect.name == "postgresql":
            _adopt_constraint_names(conn, table, old.name)
            _adopt_sequence_name(conn, table)


def _adopt_index_names(conn: Connection, table: Table) -> None:
    """Indexes are found by their columns. SQLite cannot rename one: drop and create it."""
    found: dict[tuple[str, ...], list[str]] = {}
    for ix in inspect(conn).get_indexes(table.name):
        found.setdefault(tuple(str(c) for c in ix["column_names"]), []).append(str(ix["name"]))
    for index in table.indexes:
        names, wanted = found.get(tuple(c.name for c in index.columns), []), str(index.name)
        if wanted in names:
            continue
        name = names[0] if names else None
        if name is not None and conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                f"ALTER INDEX {_quote(conn, name)} RENAME TO {_quote(conn, wanted)}"
            )
            continue
        if name is not None:
            conn.exec_driver_sql(f"DROP INDEX {_quote(conn, name)}")
        index.create(conn)


def _adopt_constraint_names(conn: Connection, table: Table, old_name: str) -> None:
    """PostgreSQL names a table's constraints after the table (`accounts_pkey`)."""
    if old_name == table.name:
        return
    names = (
        conn.execute(
            text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"),
            {"t": table.name},
        )
        .scalars()
        .all()
    )
    for name in names:
        if name.startswith(old_name + "_"):
            new_name = table.name + name.removeprefix(old_name)
            conn.exec_driver_sql(
                f"ALTER TABLE {_quote(conn, table.name)} RENAME CONSTRAINT {_quote(conn, name)} TO {_quote(conn, new_name)}"
            )


def _adopt_sequence_name(conn: Connection, table: Table) -> None:
    """PostgreSQL names a serial column's sequence `<table>_<column>_seq`."""
    column = table.autoincrement_column
    if column is None:
        return
    sequence = conn.execute(
        text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
    ).scalar()
    wanted = f"{table.name}_{column.name}_seq"
    if sequence is not None and sequence.split(".")[-1].strip('"') != wanted:
        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RENAME TO {_quote(conn, wanted)}")


def _ddl_in_transaction(conn: Connection) -> None:
    """pysqlite runs DDL outside any transaction unless one is begun explicitly: begin one,
    so a swap or a fresh start killed halfway leaves nothing half done."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


@lru_cache(maxsize=1 << 16)
def _sqlite_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


ACCOUNT_COLUMNS = ("account_id", "region", "plan", "channel", "partner", "status", "registered_at")
INTERVAL_COLUMNS = (
    "account_id",
    "capability",
    "allowed",
    "value",
    "reason",
    "effective_from",
    "effective_to",
    "recorded_from",
    "recorded_to",
)


def _account_row(account_id: str, facts: LogFacts) -> tuple[Any, ...]:
    state = fold_account(facts.accounts[account_id], at=datetime.now(UTC))
    if state.registration is None:  # registered with a future effective time
        state = fold_account(facts.accounts[account_id])
    status = (
        "suspended"
        if state.suspension
        else ("registration_suspended" if state.registration_suspended else "active")
    )
    return (
        account_id,
        state.region,
        state.plan,
        state.channel,
        state.partner,
        status,
        state.registration.effective_at if state.registration else None,
    )
