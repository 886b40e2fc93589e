"""What someone with write access to the database could do to the log, behind the engine's
back: edit a row's state, delete, insert or swap rows, recompute every chain. SQLite through
sqlite3, PostgreSQL through psycopg; states through the store's own transcoder."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from entitlements.adapters import integrity
from entitlements.adapters.store import psycopg_dsn, sqlite_path
from entitlements.application.engine import Engine

Row = tuple[int, UUID, int, str, dict[str, Any]]  # position, stream, version, topic, state


class Tamper:
    def __init__(self, engine: Engine) -> None:
        self.url = engine.url
        self.transcoder = engine.app.mapper.transcoder
        self.table: str = engine.app.recorder.events_table_name  # type: ignore[attr-defined]
        self.sqlite = sqlite_path(self.url)
        self.id = "rowid" if self.sqlite else "notification_id"

    @contextmanager
    def _db(self) -> Iterator[Any]:
        if self.sqlite is not None:
            conn: Any = sqlite3.connect(self.sqlite)
            try:
                yield conn
                conn.commit()
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(psycopg_dsn(self.url)) as pg:
                yield pg

    def _q(self, sql: str) -> str:
        return sql if self.sqlite is not None else sql.replace("?", "%s")

    def rows(self) -> list[Row]:
        with self._db() as db:
            found = db.execute(
                f"SELECT {self.id}, originator_id, originator_version, topic, state "
                f"FROM {self.table} ORDER BY {self.id}"
            ).fetchall()
        return [
            (p, UUID(str(o)), v, t, self.transcoder.decode(bytes(s))) for p, o, v, t, s in found
        ]

    def row(self, position: int) -> Row:
        return next(r for r in self.rows() if r[0] == position)

    def set_state(self, position: int, state: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute(
                self._q(f"UPDATE {self.table} SET state = ? WHERE {self.id} = ?"),
                (self.transcoder.encode(state), position),
            )

    def delete(self, position: int) -> None:
        with self._db() as db:
            db.execute(self._q(f"DELETE FROM {self.table} WHERE {self.id} = ?"), (position,))

    def _move(self, db: Any, old: int, new: int) -> None:
        db.execute(
            self._q(f"UPDATE {self.table} SET {self.id} = ? WHERE {self.id} = ?"), (new, old)
        )

    def swap(self, i: int, j: int) -> None:
        """Rows i and j trade places in the log (each keeps its own content and chain)."""
        with self._db() as db:
            self._move(db, i, -1)
            self._move(db, j, i)
            self._move(db, -1, j)

    def insert(self, position: int, stream: UUID, version: int, topic: str, state: Any) -> None:
        """A row at `position`, the rows from there on moved one place down."""
        with self._db() as db:
            for p, *_ in reversed([r for r in self.rows() if r[0] >= position]):
                self._move(db, p, p + 1)
            if self.sqlite is None:
                db.execute(f"ALTER TABLE {self.table} DISABLE TRIGGER USER")
            db.execute(
                self._q(
                    f"INSERT INTO {self.table} ({self.id}, originator_id, originator_version, "
                    "topic, state) VALUES (?, ?, ?, ?, ?)"
                ),
                (
                    position,
                    str(stream) if self.sqlite else stream,
                    version,
                    topic,
                    self.transcoder.encode(state),
                ),
            )
            if self.sqlite is None:
                db.execute(f"ALTER TABLE {self.table} ENABLE TRIGGER USER")

    def rechain(self) -> None:
        """Recompute every record's chain over the log as it now is (a forger's last step)."""
        prev = integrity.genesis(0)
        for p, stream, version, topic, state in self.rows():
            h = integrity.link(prev, integrity.content(stream, version, topic, state))
            self.set_state(p, {**state, "chain": {"prev": prev, "hash": h}})
            prev = h

    COLUMNS = ("originator_id", "originator_version", "topic", "state")

    def raw(self, position: int) -> tuple[Any, ...]:
        """A row's columns as the database holds them (SQLite: each with its storage class,
        which an edit may change: `replace()` on a BLOB gives TEXT)."""
        kinds = ", ".join(f"typeof({c})" for c in self.COLUMNS) if self.sqlite else "NULL"
        with self._db() as db:
            found = db.execute(
                self._q(
                    f"SELECT {', '.join(self.COLUMNS)}, {kinds} FROM {self.table} "
                    f"WHERE {self.id} = ?"
                ),
                (position,),
            ).fetchone()
        return tuple(bytes(v) if isinstance(v, memoryview) else v for v in found)

    def set_column(self, position: int, column: str, value: Any) -> None:
        """One column of one row set to `value`, whatever its type (as SQL would)."""
        assert column in self.COLUMNS
        with self._db() as db:
            db.execute(
                self._q(f"UPDATE {self.table} SET {column} = ? WHERE {self.id} = ?"),
                (value, position),
            )

    def execute(self, sql: str, *params: Any) -> None:
        """Any statement (`{table}` and `{id}` filled in), as someone at an SQL prompt."""
        with self._db() as db:
            db.execute(self._q(sql.format(table=self.table, id=self.id)), params)

    def restore(self, position: int, raw: tuple[Any, ...]) -> None:
        """Put back the columns `raw()` read (their values and storage classes)."""
        with self._db() as db:
            sets = ", ".join(f"{c} = ?" for c in self.COLUMNS)
            db.execute(
                self._q(f"UPDATE {self.table} SET {sets} WHERE {self.id} = ?"),
                (*raw[: len(self.COLUMNS)], position),
            )
