"""Where the log lives: a store URL -> eventsourcing's settings for its built-in recorders.

`sqlite:///path` (the embedded default) uses `eventsourcing.sqlite` on a file;
`postgresql://user@host:port/db` uses `eventsourcing.postgres`; `memory://` uses
`eventsourcing.popo`, a log held by the engine that opened it and gone when it closes (the
application tests' store: no file, no server, nothing that needs SQL). Anything else is an
error, and so is SQLite's `:memory:`: the engine never falls back silently to a store that
dies with the process; `memory://` is asked for by name.

`store_url()` is the one place a URL is normalised; eventsourcing, SQLAlchemy
(`sqlalchemy_url`) and psycopg (`psycopg_dsn`) all derive their form from its answer.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventsourcing.persistence import OperationalError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_URL = "sqlite:///entitlements.db"
ENV_VAR = "ENTITLEMENTS_DB"
MEMORY_URL = "memory://"  # the in-memory store's one spelling


class StoreError(ValueError):
    """A store URL the engine cannot use."""


class StoreUnavailable(OperationalError):
    """The store failed or could not be reached during a command (e.g. a server restart).
    One line, naming the cause; the engine reconnects on the next command."""

    @classmethod
    def from_error(cls, error: BaseException) -> StoreUnavailable:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return cls(f"the store is unavailable: {first_line}")


class StoreMissing(StoreUnavailable):
    """A read of a store that does not exist (typically a typo in --db): nothing is created."""


def store_url(url: str | None = None, option: str = "--db") -> str:
    """The canonical URL of the store given, else $ENTITLEMENTS_DB, else `entitlements.db`
    in the working directory: `sqlite:////abs/path`, `postgresql://user@host:port/db` or
    `memory://`. Accepts a plain path (an SQLite file), `sqlite:///rel/path`, `postgres://`
    and `postgresql+driver://`; one form per store, so every consumer reaches the same one.
    An error names `option` when the URL was given (`migrate --to` gives a second one)."""
    raw = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    source = option if url else f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "store"
    try:
        return _canonical(raw)
    except StoreError as e:  # one line naming where the URL came from and what is wrong
        raise StoreError(f"{source}: {e}") from None


def _canonical(raw: str) -> str:
    if "://" not in raw:  # a plain path: that SQLite file
        if raw == ":memory:":
            raise StoreError("an SQLite store needs a file path, not ':memory:'")
        return URL.create(
            "sqlite", database=os.path.abspath(os.path.expanduser(raw))
        ).render_as_string()
    try:
        parsed = make_url(raw)
    except ArgumentError:
        raise StoreError(
            f"not a store URL: {raw!r} (expected a path, sqlite:///path or postgresql://...)"
        ) from None
    except ValueError:  # SQLAlchemy's int() of the port: "invalid literal for int()"
        raise StoreError(f"not a store URL: {raw!r} (its port is not a number)") from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise StoreError(f"not a store URL: {raw!r} (its port is not 1-65535)")
    backend = parsed.get_backend_name()
    if backend == "memory":
        if parsed.render_as_string() != MEMORY_URL:
            raise StoreError(
                f"the in-memory store is {MEMORY_URL!r}, with nothing after it: {raw!r}"
            )
        return MEMORY_URL
    if backend == "sqlite":
        return _sqlite_url(parsed, raw)
    if backend in ("postgresql", "postgres"):
        return _postgresql_url(parsed)
    raise StoreError(
        f"unsupported store {backend!r} in {raw!r}: use a path, sqlite:///path or postgresql://..."
    )


def _sqlite_url(parsed: URL, raw: str) -> str:
    """`sqlite:////absolute/path`: an SQLite store is a file (never SQLite's in-memory one)."""
    path = parsed.database
    if (
        not path
        or path == ":memory:"
        or parsed.query.get("mode") == "memory"
        or "mode=memory" in path
    ):
        raise StoreError(f"an SQLite store needs a file path: {raw!r}")
    return URL.create(
        "sqlite", database=os.path.abspath(os.path.expanduser(path))
    ).render_as_string()


def _postgresql_url(parsed: URL) -> str:
    """`postgresql://user@host:port/database`, libpq's defaults filled in."""
    return URL.create(
        "postgresql",
        username=parsed.username or "postgres",
        password=parsed.password,
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        database=parsed.database or "postgres",
        query=parsed.query,
    ).render_as_string(hide_password=False)


def is_memory(url: str) -> bool:
    """Whether the store at `url` is the in-memory one (`memory://`)."""
    return store_url(url) == MEMORY_URL


class LostWithTheProcess(StoreError):
    """`memory://` where the store must outlive the process asking: a command-line run, a
    server's worker processes."""


def lasting_store_url(url: str | None, why: str, option: str = "--db") -> str:
    """`store_url(url)`, refusing `memory://` in one line: the store would end with the
    process (`why` says which), so nothing asked of it would be kept or shared."""
    canonical = store_url(url, option)
    if canonical == MEMORY_URL:
        named = "" if option == "--db" else f"{option}: "  # --db's message predates option
        raise LostWithTheProcess(
            f"{named}{MEMORY_URL} keeps the log in the memory of one process, and {why}: "
            "use a path, sqlite:///path or postgresql://..."
        )
    return canonical


def sqlite_path(url: str) -> Path | None:
    """The SQLite file of this store, or None for PostgreSQL and memory://."""
    parsed = make_url(store_url(url))
    return (
        Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
    )


def sqlalchemy_url(url: str) -> str:
    """The store's URL for SQLAlchemy: psycopg 3 (`postgresql+psycopg://`) for PostgreSQL."""
    canonical = store_url(url)
    if canonical.startswith("postgresql://"):
        return "postgresql+psycopg://" + canonical.removeprefix("postgresql://")
    return canonical


def psycopg_dsn(url: str) -> str:
    """The store's connection string for psycopg (PostgreSQL stores only)."""
    canonical = store_url(url)
    if not canonical.startswith("postgresql://"):
        raise StoreError(f"not a PostgreSQL store: {url!r}")
    return canonical


def check_store(url: str, must_exist: bool) -> None:
    """Fail fast, in one line, before a pool or file is opened: a read of an SQLite file
    that does not exist (a typo would otherwise create an empty store and answer "unknown
    account"), a missing directory, or a PostgreSQL server that refuses us (the pool would
    only say, after 5 s of retries, that it got no connection). Cheap: a stat, or one
    connection. Nothing to check for memory://."""
    session = first_session(url, must_exist)
    if session is not None:
        session.close()


def first_session(url: str, must_exist: bool) -> Any:
    """`check_store`'s checks; for PostgreSQL, the connection that showed the server
    answers, left open (autocommit) for the caller to keep: an engine's writer lock takes it
    as its session, so opening a store costs the server one connection fewer. Else None."""
    if is_memory(url):
        return None
    path = sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise StoreUnavailable(f"the store {path} is a directory, not an SQLite file")
        if must_exist and not path.exists():
            raise StoreMissing(
                f"the store does not exist: {path} (check --db or ${ENV_VAR}; nothing was created)"
            )
        if not path.parent.is_dir():
            raise StoreUnavailable(f"the store's directory does not exist: {path.parent}")
        return None
    import psycopg

    dsn = psycopg_dsn(url)
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.ProgrammingError as e:  # e.g. an unknown ?option in the URL
        raise StoreError(f"not a usable store URL: {server_reason(e)}") from None
    except psycopg.Error as e:
        parsed = make_url(dsn)
        raise StoreUnavailable(
            f"the store is unavailable: {server_reason(e)} "
            f"(postgresql://{parsed.username}@{parsed.host}:{parsed.port}/{parsed.database})"
        ) from e


def server_reason(error: BaseException) -> str:
    """libpq's first line without its "connection to server at ... failed:" and "FATAL:"
    prefixes: what the server (or the network) said."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    reason = first.rsplit(" failed: ", 1)[-1].strip()
    return reason.removeprefix("FATAL:").strip() or first


def eventsourcing_env(url: str) -> dict[str, str]:
    """The environment eventsourcing's infrastructure factory reads for this store."""
    if is_memory(url):
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    parsed = make_url(store_url(url))
    if parsed.get_backend_name() == "sqlite":
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(parsed.database),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    return {  # store_url() filled in every part
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(parsed.database),
        "POSTGRES_HOST": str(parsed.host),
        "POSTGRES_PORT": str(parsed.port),
        "POSTGRES_USER": str(parsed.username),
        "POSTGRES_PASSWORD": parsed.password or "",
        "POSTGRES_LOCK_TIMEOUT": "5",
        # The pool opens connections as threads need them, up to 15 (as before), and closes
        # one idle for 10 minutes: each costs the server a process (about 5 ms of its CPU
        # to start, here) and a slot of max_connections, and most processes (a CLI command,
        # a checking worker) use one. It kept 5 open from the start; with 1, psycopg_pool's
        # filling raced the first use and opened two.
        "POSTGRES_POOL_SIZE": "0",
        "POSTGRES_MAX_OVERFLOW": "15",
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_PRE_PING": "y",  # a pooled connection that died (server restart) is replaced
    }


def create_tables(url: str, recorder: Any) -> None:
    """The store's table of events and its clock guard, where missing (called under the
    writer lock); the in-memory store has neither table nor server to guard."""
    if is_memory(url):
        return
    recorder.create_table()
    install_clock_guard(url, recorder)


def install_clock_guard(url: str, recorder: Any) -> None:
    """PostgreSQL: refuse, in the inserting transaction itself, an event whose recorded_at
    is earlier than the newest in the store. The writer lock keeps writers in clock order,
    but a server restart ends the lock's session while a writer's insert is still being
    retried by the driver layer; this keeps the store's clock from going back even then.
    (eventsourcing's recorder locks the table for each insert, so 'newest' is exact.)
    SQLite needs no guard: its writer lock is a file lock that no restart can drop."""
    if sqlite_path(url) is not None or is_memory(url):
        return
    table = recorder.events_table_name
    function = f"{table}_recorded_at_never_decreases"
    with recorder.datastore.get_connection() as conn:  # the pool's (autocommit), not one more
        exists = conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = 'recorded_at_never_decreases' "
            "AND tgrelid = to_regclass(%s)",
            (table,),
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
    Optimistic concurrency on aggregate versions stays underneath as the safety net.
    Threads of one process (HTTP workers' request threads) take turns first: the file
    descriptor and the session lock belong to the process, not to a thread. memory://: the
    threads' turns are all there is (no other process sees the store)."""

    KEY = 0x656E7469  # the advisory lock's key ("enti")

    def __init__(self, url: str, timeout: float = 30.0, session: Any = None) -> None:
        """`session`: a PostgreSQL connection (autocommit) to hold the lock on, such as
        `first_session`'s; without one, the lock connects when first taken."""
        self.url = store_url(url)
        self.timeout = timeout
        path = sqlite_path(self.url)
        self._file = f"{path}.lock" if path is not None else None
        self._session = path is None and self.url != MEMORY_URL  # PostgreSQL's advisory lock
        self._fd: int | None = None
        self._conn: Any = None if session is None else self._waiting_at_most(session)
        self._threads = threading.Lock()

    def __enter__(self) -> WriterLock:
        if not self._threads.acquire(timeout=self.timeout):
            raise TimeoutError(f"another writer held the store for {self.timeout:g} s")
        try:
            if self._file is not None:
                fd = self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o644)
                self._wait(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
            elif self._session:
                self._pg_lock()
        except BaseException:
            self._release_os_lock()
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._release_os_lock()
        finally:
            self._threads.release()

    def _release_os_lock(self) -> None:
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
                    self._conn = self._waiting_at_most(
                        psycopg.connect(psycopg_dsn(self.url), autocommit=True, connect_timeout=5)
                    )
                self._conn.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))
                return
            except psycopg.OperationalError as e:
                self._conn = None
                if attempt:
                    raise StoreUnavailable.from_error(e) from e

    def _waiting_at_most(self, conn: Any) -> Any:
        """`conn`, which waits for the lock at most this lock's timeout."""
        timeout = f"{int(self.timeout * 1000)}ms"
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (timeout,))
        return conn

    def _wait(self, try_lock: Callable[[], object]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                try_lock()
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another writer held the store for {self.timeout:g} s"
                    ) from None
                time.sleep(0.0005)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
