"""Where the log lives: a store URL -> eventsourcing's settings for its built-in recorders.

`sqlite:///path` (the embedded default) uses `eventsourcing.sqlite` on a file;
`postgresql://user@host:port/db` uses `eventsourcing.postgres`. Anything else is an
error: the engine never falls back silently to an in-memory store.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_URL = "sqlite:///entitlements.db"
ENV_VAR = "ENTITLEMENTS_DB"


class StoreError(ValueError):
    """A store URL the engine cannot use."""


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
        }
    raise StoreError(f"unsupported store {backend!r} in {url!r}: use sqlite:///path or postgresql://...")
