"""Rows written into another store as they are: the log's records at their own positions,
and the API tokens, for `entitlements migrate` (entitlements/application/migrate.py).

eventsourcing's recorders append at the next position the store hands out; a copy must keep
the source's positions (the notification ids: receipts, `min_position` and every reader's
tracking name them), so the rows go in through the recorder's own connection and table with
their position given: PostgreSQL's `COPY ... FROM STDIN` (binary) and the sequence moved
past them, SQLite's `INSERT` with the `rowid`. The states are the stored bytes, untouched:
the integrity chain inside them (integrity.py) arrives unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder
from sqlalchemy import inspect, select
from sqlalchemy.engine import Engine as SqlEngine

from entitlements.adapters.tokens import api_tokens, metadata
from entitlements.domain.times import stored_utc

CLOCK_GUARD = "recorded_at_never_decreases"  # store.install_clock_guard's trigger


class LogRow(NamedTuple):
    """One stored record with its position, as stored (the state is the stored bytes); a
    tuple in the order of the COPY's columns, so it is written as it is."""

    position: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes

    @classmethod
    def of(cls, notification: Any) -> LogRow:
        """A recorder's Notification as a row (a memoryview state read as bytes)."""
        state = notification.state
        return cls(
            notification.id,
            notification.originator_id,
            notification.originator_version,
            notification.topic,
            state if type(state) is bytes else bytes(state),
        )


def is_postgres(recorder: ApplicationRecorder) -> bool:
    """Whether `recorder` is eventsourcing's PostgreSQL recorder (else SQLite's)."""
    return hasattr(recorder.datastore, "schema")  # type: ignore[attr-defined]


def append_rows(recorder: ApplicationRecorder, rows: Sequence[LogRow]) -> None:
    """Write `rows` (in log order, past the store's head) at their own positions, in one
    transaction: all of them or none (a kill mid-batch leaves the store at the last batch)."""
    if not rows:
        return
    if is_postgres(recorder):
        _copy_postgres(recorder, rows)
    else:
        _insert_sqlite(recorder, rows)


def _insert_sqlite(recorder: Any, rows: Sequence[LogRow]) -> None:
    """SQLite: the position is the rowid (what the recorder reads as the notification id);
    the originator id as the recorder writes it (hex)."""
    statement = (
        f"INSERT INTO {recorder.events_table_name} "
        "(rowid, originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?, ?)"
    )
    values = [
        (r.position, r.originator_id.hex, r.originator_version, r.topic, r.state) for r in rows
    ]
    with recorder.datastore.transaction(commit=True) as c:
        c.executemany(statement, values)


def _copy_postgres(recorder: Any, rows: Sequence[LogRow]) -> None:
    """PostgreSQL: COPY (binary) with the notification ids given, then the id sequence
    moved past the last (a later `apply` goes on from there), and followers woken (the
    channel the recorder's own insert notifies). The clock guard (store.py) is off for this
    transaction only: its per-row read of the newest record doubles the copy's time (17,007
    records: 0.31-0.39 s without it, 0.64-0.90 s with it), and the rows are the source's,
    already in its clock order. ALTER TABLE is transactional: no other session ever sees
    the guard off (it waits for the table's lock instead)."""
    from psycopg import sql

    name = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    guarded = _has_clock_guard(recorder)
    trigger = sql.Identifier(CLOCK_GUARD)
    with recorder.datastore.transaction(commit=True) as c:
        if guarded:
            c.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(name, trigger))
        columns = "notification_id, originator_id, originator_version, topic, state"
        statement = sql.SQL("COPY {} (" + columns + ") FROM STDIN (FORMAT BINARY)")
        with c.copy(statement.format(name)) as copy:
            copy.set_types(["int8", "uuid", "int8", "text", "bytea"])
            for row in rows:
                copy.write_row(row)
        if guarded:
            c.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(name, trigger))
        c.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
            (name.as_string(c), rows[-1].position),
        )
        c.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(recorder.channel_name)))


def _has_clock_guard(recorder: Any) -> bool:
    """Whether the events table carries store.py's `recorded_at` guard (a table created by
    the library alone does not)."""
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
            (CLOCK_GUARD, f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'),
        )
        return c.fetchone() is not None


def row_at(recorder: ApplicationRecorder, position: int) -> LogRow | None:
    """The record at `position`, as stored, or None when there is none."""
    if position <= 0:
        return None
    found = recorder.select_notifications(start=position, limit=1, stop=position)
    return LogRow.of(found[0]) if found else None


# -- the API tokens ----------------------------------------------------------------------

TOKEN_COLUMNS = ("name", "role", "token_hash", "created_at", "revoked_at")


def read_tokens(engine: SqlEngine) -> dict[str, dict[str, Any]]:
    """Every token row by name, its times aware UTC (SQLite hands them back naive); none
    where the table is missing (a store no token was ever made for: nothing is created)."""
    if not inspect(engine).has_table(api_tokens.name):
        return {}
    columns = [api_tokens.c[k] for k in TOKEN_COLUMNS]
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(*columns))]
    for row in rows:
        for key in ("created_at", "revoked_at"):
            if row[key] is not None:
                row[key] = stored_utc(row[key])
    return {row["name"]: row for row in rows}


def write_tokens(
    engine: SqlEngine, new: Sequence[dict[str, Any]], revoked: Sequence[dict[str, Any]]
) -> None:
    """Insert the `new` token rows and mark the `revoked` ones revoked, in one transaction
    (the table created where missing, as the token store itself does)."""
    metadata.create_all(engine, tables=[api_tokens], checkfirst=True)
    with engine.begin() as conn:
        if new:
            conn.execute(api_tokens.insert(), list(new))
        for row in revoked:
            conn.execute(
                api_tokens.update()
                .where(api_tokens.c.name == row["name"], api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=row["revoked_at"])
            )
