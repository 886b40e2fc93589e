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

import hashlib
import struct
from collections.abc import Iterator, Sequence
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


def read_sqlite_rows(
    recorder: ApplicationRecorder, after: int, until: int, page: int
) -> Iterator[list[LogRow]]:
    """An SQLite log's rows after `after` up to `until`, as stored, in pages of `page`,
    straight from the recorder's own table (its rowid, its columns: no Notification made
    per row, only the UUID the copy writes). Another store is read through the one pager
    (projections.log_reader.read_stored)."""
    r: Any = recorder
    statement = (
        f"SELECT rowid, originator_id, originator_version, topic, state FROM "
        f"{r.events_table_name} WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?"
    )
    while after < until:
        with r.datastore.transaction(commit=False) as c:
            c.execute(statement, (after, until, page))
            rows = [LogRow(p, UUID(o), v, t, s) for p, o, v, t, s in c.fetchall()]
        if not rows:
            return
        yield rows
        after = rows[-1].position


def row_at(recorder: ApplicationRecorder, position: int) -> LogRow | None:
    """The record at `position`, as stored, or None when there is none."""
    if position <= 0:
        return None
    found = recorder.select_notifications(start=position, limit=1, stop=position)
    return LogRow.of(found[0]) if found else None


# -- the rows' digest: does the target hold exactly the source's rows? -------------------
#
# Each row is encoded without ambiguity: its position (8 bytes, big-endian), its stream's
# 16 bytes, its version (8 bytes), then the topic's UTF-8 and the state's bytes each after
# its length (4 bytes; -1 for a missing state). Each row is hashed (SHA-256), and a chunk
# of DIGEST_CHUNK positions is the SHA-256 of its rows' hashes in order: (chunk, rows, hash)
# for each chunk holding a row (a row's own hash first: PostgreSQL then sorts 32 bytes a
# row, not the rows). Equal lists: the same rows, byte for byte, at the same positions, no
# row more or less. A row
# that cannot be encoded so (no stream, a topic that is not text, ...) never lets its chunk
# equal another's: here its chunk's hash names the side and the row instead of a digest;
# in PostgreSQL it is 0xFF and its position, a start no encoded row has (a position's first
# byte is below 0x80).

DIGEST_CHUNK = 10_000
Chunks = list[tuple[int, int, str]]  # (chunk: (position - 1) // DIGEST_CHUNK, rows, hex)
_HEAD = struct.Struct(">q16sqi")
_LENGTH = struct.Struct(">i")


def row_bytes(position: int, stream: Any, version: Any, topic: Any, state: Any) -> bytes | None:
    """One row as the digest encodes it (see above); None when it cannot be."""
    try:
        uuid = stream if type(stream) is UUID else UUID(stream)
        name: bytes = topic.encode()
        head: bytes = _HEAD.pack(position, uuid.bytes, version, len(name)) + name
    except (TypeError, ValueError, AttributeError, struct.error):
        return None
    if state is None:
        return head + _LENGTH.pack(-1)
    if not isinstance(state, bytes | bytearray | memoryview):
        return None
    stored = state if type(state) is bytes else bytes(state)
    return head + _LENGTH.pack(len(stored)) + stored


class RowDigest:
    """The digest of rows given in log order (positions up to `until` only), on `side`."""

    def __init__(self, until: int, side: str) -> None:
        self.until, self.side = until, side
        self.chunks: Chunks = []
        self._chunk, self._rows, self._hash = -1, 0, hashlib.sha256()
        self._bad: int | None = None  # the first row of this chunk that cannot be encoded

    def add(self, position: int, encoded: bytes | None) -> None:
        if position > self.until:
            return
        chunk = (position - 1) // DIGEST_CHUNK
        if chunk != self._chunk:
            self._close()
            self._chunk, self._rows, self._hash = chunk, 0, hashlib.sha256()
        self._rows += 1
        if encoded is None:
            self._bad = position if self._bad is None else self._bad
        else:
            self._hash.update(hashlib.sha256(encoded).digest())

    def notification(self, n: Any) -> None:
        """A recorder's Notification (or a row it could not list: an id and no more)."""
        if not hasattr(n, "state"):
            self.add(n.id, None)
            return
        self.add(n.id, row_bytes(n.id, n.originator_id, n.originator_version, n.topic, n.state))

    def _close(self) -> None:
        if self._rows:
            bad = self._bad
            hashed = self._hash.hexdigest() if bad is None else f"{self.side}: row {bad}"
            self.chunks.append((self._chunk, self._rows, hashed))
            self._rows, self._bad = 0, None

    def result(self) -> Chunks:
        self._close()
        return self.chunks


def stored_digest(recorder: ApplicationRecorder) -> Chunks:
    """The digest of every row the store holds, as its recorder would read them: in
    PostgreSQL by the server (the rows never leave it), in SQLite here."""
    if is_postgres(recorder):
        return _postgres_digest(recorder)
    r: Any = recorder
    digest, after = RowDigest(until=2**63 - 1, side="target"), -(2**63)
    statement = (
        f"SELECT rowid, originator_id, originator_version, topic, state FROM "
        f"{r.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    )
    while True:
        with r.datastore.transaction(commit=False) as c:
            c.execute(statement, (after, DIGEST_CHUNK))
            page = c.fetchall()
        for p, o, v, t, s in page:
            digest.add(p, row_bytes(p, o, v, t, s))
        if len(page) < DIGEST_CHUNK:
            return digest.result()
        after = page[-1][0]


def _postgres_digest(recorder: Any) -> Chunks:
    """The same digest computed by PostgreSQL (each row encoded as row_bytes does, int8send
    and uuid_send big-endian as struct's '>', and hashed; each chunk the sha256 of its rows'
    hashes in position order)."""
    from psycopg import sql

    name = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    encoded = (
        "coalesce(int8send(notification_id) || uuid_send(originator_id)"
        " || int8send(originator_version) || int4send(octet_length(convert_to(topic, 'UTF8')))"
        " || convert_to(topic, 'UTF8') || int4send(coalesce(octet_length(state), -1))"
        " || coalesce(state, ''::bytea), '\\xff'::bytea || int8send(notification_id))"
    )
    statement = sql.SQL(
        "SELECT chunk, count(*) AS rows, encode(sha256(string_agg(h, ''::bytea ORDER BY id)), "
        "'hex') AS hash FROM (SELECT notification_id AS id, (notification_id - 1) / {chunk} "
        "AS chunk, sha256(" + encoded + ") AS h FROM {name} OFFSET 0) AS hashed "
        "GROUP BY chunk ORDER BY chunk"
    ).format(chunk=sql.Literal(DIGEST_CHUNK), name=name)
    with recorder.datastore.transaction(commit=False) as c:
        c.execute(statement)
        return [(int(r["chunk"]), int(r["rows"]), str(r["hash"])) for r in c.fetchall()]


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
