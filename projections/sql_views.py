"""Writing the SQL read models: the rows of the accounts and regions a batch of events
touched, with the tracking position, in one transaction (exactly once).

Rows are narrow (projections/state_intervals.py); the capabilities are a view over them.
PostgreSQL takes them through COPY, SQLite through driver-level executemany: the per-row
parameter processing of Core inserts costs more than the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, create_engine, delete, insert, inspect, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.engine import Engine as SqlEngine

from projections.check_index import CheckIndex
from projections.daily_counts import capability_day_changes_sql
from projections.facts import LogFacts
from projections.state_intervals import (
    ACCOUNT_COLUMNS,
    ACCOUNT_ROW_COLUMNS,
    REGION_COLUMNS,
    account_rows,
    region_rows,
)
from projections.tables import (
    CURRENT,
    VIEWS,
    ReadModelTables,
    capabilities_now_sql,
    capability_intervals_sql,
    define_tables,
    tracking,
)

CHUNK = 500  # account ids per DELETE ... IN (...)
#: The table the capabilities were kept in before they became a view (an older schema).
LEGACY_INTERVALS = "capability_intervals"


#: WAL pages a bulk load (a rebuild's inserting process) lets pile up before it copies them
#: into the database (SQLite's default: 1,000): its b-tree pages are written a few times
#: over instead of at every other commit, and the WAL stays under about 40 MB.
BULK_CHECKPOINT_PAGES = 10_000


class NoSqlDatabase(ValueError):
    """The store has no SQL database beside its log (`memory://`): nothing kept in SQL (the
    read models, the report, a rebuild or catch-up, the API tokens) can be asked of it."""


def sql_engine(url: str, bulk_load: bool = False) -> SqlEngine:
    """SQLAlchemy engine on the same database as the log, from the store's canonical URL
    (entitlements.adapters.store.store_url: `sqlite:////abs` or `postgresql://...`), with psycopg 3
    for PostgreSQL. Normalising what users type is the doors' work, not a projection's.
    `bulk_load`: checkpoint SQLite's WAL less often (BULK_CHECKPOINT_PAGES); the loader
    checkpoints it once done (`checkpoint`). Every SQL read model, the report and the token
    table come through here, so `memory://` is refused here, in one line (NoSqlDatabase)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "memory":
        raise NoSqlDatabase(
            f"{url} keeps only the log, in this process's memory: the SQL read models, "
            "report, rebuild, catch-up and API tokens need a database "
            "(sqlite:///path or postgresql://...)"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed)
    if engine.dialect.name == "sqlite":
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            if bulk_load:
                cur.execute(f"PRAGMA wal_autocheckpoint={BULK_CHECKPOINT_PAGES}")
            cur.close()

    return engine


def checkpoint(engine: SqlEngine) -> None:
    """Copy what SQLite's WAL holds into the database now (a bulk load's last step, so no
    later writer pays for it); nothing to do on PostgreSQL."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


class SqlReadModel:
    """The `accounts`, `account_state_intervals` and `region_state_intervals` tables of one
    generation, and its tracking; the current generation also has the two views."""

    def __init__(self, engine: SqlEngine, name: str = "read_models", suffix: str = "") -> None:
        self.engine = engine
        self.name = name
        self.tables: ReadModelTables = define_tables(suffix)
        self._sqlite = engine.dialect.name == "sqlite"

    def create(self) -> None:
        """Create what is missing. A store of the older schema (capabilities kept in a
        table) loses that table and its tracking: the next catch-up writes every row."""
        found = inspect(self.engine)
        legacy = not self.tables.suffix and LEGACY_INTERVALS in found.get_table_names()
        views = set(found.get_view_names())
        if legacy:
            with self.engine.begin() as conn:
                _ddl_in_transaction(conn)
                conn.exec_driver_sql("DROP VIEW IF EXISTS capabilities_now")
                conn.exec_driver_sql(f"DROP TABLE {LEGACY_INTERVALS}")
                tracking.metadata.create_all(conn)
                conn.execute(delete(tracking).where(tracking.c.name == self.name))
            views = set()
        self.tables.metadata.create_all(self.engine)
        tracking.metadata.create_all(self.engine)
        if not self.tables.suffix and not set(VIEWS) <= views:
            with self.engine.begin() as conn:
                _ddl_in_transaction(conn)
                _create_views(conn, self.engine)

    def position(self, conn: Connection | None = None) -> int:
        def read(c: Connection) -> int:
            row = c.execute(select(tracking.c.position).where(tracking.c.name == self.name)).first()
            return row[0] if row else 0

        if conn is not None:
            return read(conn)
        with self.engine.connect() as c:
            return read(c)

    def write(
        self,
        facts: LogFacts,
        index: CheckIndex | None,
        accounts: Iterable[str],
        position: int,
        regions: Iterable[str] = (),
    ) -> bool:
        """Replace the rows of `accounts` and `regions` and move tracking to `position`,
        atomically. A position already reached (a replayed delivery) changes nothing:
        returns False. (`index` is not needed: rows come from the facts.)"""
        with self.engine.begin() as conn:
            if self.position(conn) >= position:
                return False
            self.replace_rows(conn, facts, sorted(set(accounts)), sorted(set(regions)))
            self.track(conn, position)
        return True

    def replace_rows(
        self,
        conn: Connection,
        facts: LogFacts,
        accounts: Sequence[str],
        regions: Sequence[str] = (),
    ) -> None:
        """Delete and insert the rows of these accounts and regions."""
        a, s, r = self.tables.accounts, self.tables.account_states, self.tables.region_states
        for start in range(0, len(accounts), CHUNK):
            chunk = list(accounts[start : start + CHUNK])
            conn.execute(delete(s).where(s.c.account_id.in_(chunk)))
            conn.execute(delete(a).where(a.c.account_id.in_(chunk)))
        if regions:
            conn.execute(delete(r).where(r.c.region.in_(list(regions))))
        self.insert_rows(conn, facts, accounts, regions)

    @property
    def when(self) -> Any:
        """How a time is written into a row: UTC text on SQLite (as SQLAlchemy's DateTime
        stores it), the datetime itself on PostgreSQL (None stays None)."""
        return _sqlite_time if self._sqlite else None

    def insert_rows(
        self,
        conn: Connection,
        facts: LogFacts,
        accounts: Sequence[str],
        regions: Sequence[str] = (),
    ) -> int:
        """Insert the rows of these accounts and regions (none there yet); returns how many
        state rows."""
        when = self.when
        accounts_rows: list[tuple[Any, ...]] = []
        state_rows: list[tuple[Any, ...]] = []
        every, region_of = facts.accounts, facts.region_of
        now = datetime.now(UTC)
        add_account, add_states = accounts_rows.append, state_rows.extend
        for account_id in accounts:
            row, states = account_rows(
                account_id, region_of[account_id], every[account_id], now, when
            )
            add_account(row)
            add_states(states)
        regions_rows = [
            row for code in regions for row in region_rows(code, facts.regions[code], when)
        ]
        self.insert_prepared(conn, accounts_rows, state_rows, regions_rows)
        return len(state_rows) + len(regions_rows)

    def insert_prepared(
        self,
        conn: Connection,
        accounts_rows: list[tuple[Any, ...]],
        state_rows: list[tuple[Any, ...]],
        regions_rows: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """Insert rows already made (ACCOUNT_ROW_COLUMNS, ACCOUNT_COLUMNS, REGION_COLUMNS;
        times as `when` writes them) into tables that do not hold them yet. The rebuild
        calls this on its fresh tables, with no deletes."""
        tables = self.tables
        self._insert(conn, tables.accounts, ACCOUNT_ROW_COLUMNS, accounts_rows)
        self._insert(conn, tables.account_states, ACCOUNT_COLUMNS, state_rows)
        self._insert(conn, tables.region_states, REGION_COLUMNS, regions_rows or [])

    def _insert(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """COPY on PostgreSQL; executemany on SQLite (times already text there)."""
        if not rows:
            return
        names = ", ".join(columns)
        if not self._sqlite:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
            return
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)

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
        """Whether every table of this generation, and the tracking table, are there."""
        names = set(inspect(self.engine).get_table_names())
        return {t.name for t in self.tables.all} | {tracking.name} <= names

    def recreate(self, counters: dict[str, int]) -> None:
        """Start this generation afresh, in one transaction: drop whatever an earlier attempt
        left (tables, tracking rows), free the names it needs if the current tables still
        carry them, create it empty and without indexes (they come after the bulk load:
        `index`, or the swap, which makes them under the current names at once) and record
        `counters` beside it."""
        with self.engine.begin() as conn:
            _ddl_in_transaction(conn)
            for table in self.tables.all:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {_quote(conn, table.name)}")
            tracking.metadata.create_all(conn)
            conn.execute(delete(tracking).where(tracking.c.name.startswith(self.name)))
            adopt_names(conn, CURRENT, formerly=self.tables)
            self.tables.metadata.create_all(conn)
            for table in self.tables.all:  # made once the bulk is in (`index`, or the swap)
                for index in table.indexes:
                    conn.exec_driver_sql(f"DROP INDEX {_quote(conn, str(index.name))}")
            for name, value in counters.items():
                self.track(conn, value, name)

    def index(self, conn: Connection) -> None:
        """Create the indexes a fresh generation is bulk-loaded without (an index built
        over sorted rows at the end costs a fraction of one kept up row by row)."""
        adopt_names(conn, self.tables, formerly=self.tables)

    def repair(self) -> None:
        """Create any index of this generation that a crash left out (SQLite runs a
        `create_all` outside any transaction)."""
        with self.engine.begin() as conn:
            adopt_names(conn, self.tables, formerly=self.tables)

    def swap_into_place(self, position: int, unless_behind: bool = False) -> bool:
        """Make this generation the current tables (drop the views and the old tables,
        rename the new, give their indexes, keys and sequences the current names, creating
        the indexes a bulk load left out, so the next rebuild finds its own names free,
        create the views), with the current tracking at `position`, in one transaction.

        `unless_behind`: not if the current tables have meanwhile gone past `position`
        (another process catching them up): then nothing changes and it returns False. On
        SQLite the transaction takes the write lock first; on PostgreSQL the position is
        read once the old tables are dropped, i.e. once no transaction writes them."""
        old, new = CURRENT, self.tables
        with self.engine.connect() as conn, conn.begin() as transaction:
            _ddl_in_transaction(conn, immediate=True)
            for view in VIEWS:
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
            existing = set(inspect(conn).get_table_names())
            for name in (*(t.name for t in old.all), LEGACY_INTERVALS):
                if name in existing:
                    conn.exec_driver_sql(f"DROP TABLE {_quote(conn, name)}")
            current = SqlReadModel(self.engine)
            if unless_behind and tracking.name in existing and current.position(conn) > position:
                transaction.rollback()
                return False
            for table, target in zip(new.all, old.all, strict=True):
                conn.exec_driver_sql(
                    f"ALTER TABLE {_quote(conn, table.name)} RENAME TO {_quote(conn, target.name)}"
                )
            adopt_names(conn, old, formerly=new)
            _create_views(conn, self.engine)
            conn.execute(delete(tracking).where(tracking.c.name.startswith(self.name)))
            current.track(conn, position)
        return True


def _create_views(conn: Connection, engine: SqlEngine) -> None:
    """The views over the current tables (read when called: a test may fail one); any
    already there are replaced, so a store made before a view existed gains it."""
    for view in VIEWS:
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view}")
    conn.exec_driver_sql(capability_intervals_sql(engine))
    conn.exec_driver_sql(capabilities_now_sql(engine))
    conn.exec_driver_sql(capability_day_changes_sql(engine))


def adopt_names(conn: Connection, tables: ReadModelTables, formerly: ReadModelTables) -> None:
    """Give the tables of a generation the index, primary-key and (PostgreSQL) sequence
    names `define_tables` gives them, where they still carry those of `formerly` (a renamed
    table keeps its old ones); create any index missing. Tables not there are skipped."""
    for table, old in zip(tables.all, formerly.all, strict=True):
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


def _ddl_in_transaction(conn: Connection, immediate: bool = False) -> None:
    """pysqlite runs DDL outside any transaction unless one is begun explicitly: begin one,
    so a swap or a fresh start killed halfway leaves nothing half done; `immediate` takes
    the write lock at once (what it reads then cannot change before it writes)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


@lru_cache(maxsize=1 << 16)
def _sqlite_time(t: datetime | None) -> str | None:
    """Times as SQLAlchemy's DateTime stores them on SQLite: UTC text. `isoformat` writes
    the same text as the strftime format below in a fraction of its time, from year 1000."""
    if t is None:
        return None
    if t.utcoffset():
        t = t.astimezone(UTC)
    if t.year < 1000:  # strftime's %Y does not pad: keep its text
        return t.strftime("%Y-%m-%d %H:%M:%S.%f")
    return t.isoformat(" ", "microseconds")[:26]
