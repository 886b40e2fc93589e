"""Where the log lives: a store URL -> eventsourcing's settings for its built-in recorders.

`sqlite:///path` (the embedded default) uses `eventsourcing.sqlite` on a file;
`postgresql://user@host:port/db` uses `eventsourcing.postgres`. Anything else is an
error: the engine never falls back silently to an in-memory store.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from eventsourcing.persistence import OperationalError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_URL = "sqlite:///entitlements.db"
ENV_VAR = "ENTITLEMENTS_DB"


class StoreError(ValueError):
    """A store URL the engine cannot use."""


class StoreUnavailable(OperationalError):
    """The store failed or could not be reached during a command (e.g. a server restart).
    One line, naming the cause; the engine reconnects on the next command."""

    @classmethod
    def from_error(cls, error: BaseException) -> StoreUnavailable:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return cls(f"the store is unavailable: {first_line}")


def store_url(url: str | None = None) -> str:
    """The URL given, else $ENTITLEMENTS_DB, else an SQLite file in the working directory."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def eventsourcing_env(url: str) -> dict[str, str]:
    """The environment eventsourcing's infrastructure factory reads for this store."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a store URL: {url!r} (expected sqlite:///path or postgresql://...)") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or "mode=memory" in path:
            raise StoreError(f"an SQLite store needs a file path: {url!r}")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    if backend == "postgresql":
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.database or "postgres",
            "POSTGRES_HOST": parsed.host or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": parsed.username or "postgres",
            "POSTGRES_PASSWORD": parsed.password or "",
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_CONNECT_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "y",  # a pooled connection that died (server restart) is replaced
        }
    raise StoreError(f"unsupported store {backend!r} in {url!r}: use sqlite:///path or postgresql://...")


def install_clock_guard(url: str, table: str) -> None:
    """PostgreSQL: refuse, in the inserting transaction itself, an event whose recorded_at
    is earlier than the newest in the store. The writer lock keeps writers in clock order,
    but a server restart ends the lock's session while a writer's insert is still being
    retried by the driver layer; this keeps the store's clock from going back even then.
    (eventsourcing's recorder locks the table for each insert, so 'newest' is exact.)
    SQLite needs no guard: its writer lock is a file lock that no restart can drop."""
    if make_url(url).get_backend_name() != "postgresql":
        return
    import psycopg

    function = f"{table}_recorded_at_never_decreases"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'recorded_at_never_decreases' "
            "AND tgrelid = to_regclass(%s)", (table,),
        ).fetchone()
        if exists:
            return
        conn.execute(f"""
            CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE incoming timestamptz; newest timestamptz;
            BEGIN
              incoming := (convert_from(NEW.state, 'UTF8')::jsonb -> 'recorded_at' ->> '_data_')::timestamptz;
              SELECT (convert_from(state, 'UTF8')::jsonb -> 'recorded_at' ->> '_data_')::timestamptz
                INTO newest FROM {table} ORDER BY notification_id DESC LIMIT 1;
              IF incoming < newest THEN
                RAISE EXCEPTION 'recorded_at % is earlier than the newest in the store (%)',
                  incoming, newest USING ERRCODE = 'check_violation';
              END IF;
              RETURN NEW;
            END $$""")
        conn.execute(
            f"CREATE TRIGGER recorded_at_never_decreases BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()"
        )


class WriterLock:
    """One writer at a time across processes, for the span of one command's
    read-decide-write, so `recorded_at` never decreases and every command decides on the
    latest region rules. SQLite: an flock on a file beside the database. PostgreSQL: a
    session advisory lock on a connection of its own (reconnects after a server restart).
    Optimistic concurrency on aggregate versions stays underneath as the safety net."""

    KEY = 0x656E7469  # the advisory lock's key ("enti")

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        parsed = make_url(url)
        sqlite = parsed.get_backend_name() == "sqlite" and parsed.database
        self._file = f"{parsed.database}.lock" if sqlite else None
        self._fd: int | None = None
        self._conn: Any = None

    def __enter__(self) -> WriterLock:
        if self._file is not None:
            self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o644)
            self._wait(lambda: fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB))  # type: ignore[arg-type]
        else:
            self._pg_lock()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        elif self._conn is not None:
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))
            except Exception:  # noqa: BLE001 - a dead connection holds no lock
                self._conn = None

    def _pg_lock(self) -> None:
        import psycopg

        for attempt in range(2):
            try:
                if self._conn is None or self._conn.closed:
                    dsn = self.url.replace("postgresql+psycopg://", "postgresql://")
                    self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
                    timeout = f"{int(self.timeout * 1000)}ms"
                    self._conn.execute("SELECT set_config('lock_timeout', %s, false)", (timeout,))
                self._conn.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))
                return
            except psycopg.OperationalError as e:
                self._conn = None
                if attempt:
                    raise StoreUnavailable.from_error(e) from e

    def _wait(self, try_lock: Any) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                try_lock()
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another writer held the store for {self.timeout:g} s") from None
                time.sleep(0.0005)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
