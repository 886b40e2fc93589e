"""Snapshots bound to their store: the SHA-256 of every snapshot file a process writes (the
check index's, the writer's command book), kept in the store's own database.

A snapshot lives outside the database (beside an SQLite file, or in a cache folder), and
whoever can write there could swap two accounts' rows, or relabel a stale file with the
head's fingerprint: every check of the file's own (shape, ranges, the event it names) still
passes, and the process would answer from it. The database is what the log's integrity
chain protects, so a file is used only when its digest, computed as it is read, is on
record for its kind and position, with the fingerprint of the event there (whose stored
bytes carry that event's chain hash) the log's own. Anything else is ignored: the log is
read instead, which is said once on stderr (one line) and counted (`refused`, exposed as
entitlements_snapshots_refused_total). The digest is computed while the file is written
and recorded before the file is moved into place, so a file in place is always on record.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Engine as SqlEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from projections.snapshot_io import UNREADABLE as UNREADABLE  # re-exported: the readers'
from projections.snapshot_io import Hashed as Hashed

TABLE = "snapshot_digests"
KEEP = 64  # rows kept per kind: processes with cache folders of their own each write theirs

metadata = MetaData()
digests = Table(
    TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "index" or "commands"
    Column("position", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the file's bytes, hex
    Column("head", String(64), nullable=True),  # the fingerprint's sha256 (None: position 0)
)

#: Snapshot files this process refused, by kind (the HTTP worker turns it into a counter).
refused: Counter[str] = Counter()


def head_of(fingerprint: dict[str, Any] | None) -> str | None:
    """What a row keeps of the fingerprint of the event at its position: the SHA-256 of
    the event's stored bytes, its chain hash included."""
    return None if fingerprint is None else str(fingerprint.get("sha256"))


def refuse(kind: str, path: Path, why: str) -> None:
    """Say on stderr, in one line, that a snapshot file is ignored, and count it."""
    refused[kind] += 1
    reason = " ".join(why.split())
    print(
        f"entitlements: ignored the {kind} snapshot {path} ({reason}); reading the log instead",
        file=sys.stderr,
    )


class Digests:
    """The store's record of the snapshot files written of it (see the module's docstring).
    A connection per use (NullPool): a process reads it once at start, writes it seldom."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        sqlite = parsed.get_backend_name() == "sqlite"
        self._sql: SqlEngine = create_engine(
            parsed, poolclass=NullPool, connect_args={"timeout": 30} if sqlite else {}
        )
        self._created = False

    def record(self, kind: str, position: int, digest: str, head: str | None) -> None:
        """Put a file's digest on record (before the file is moved into place); only the
        newest KEEP rows of its kind are kept."""
        if not self._created:
            with contextlib.suppress(SQLAlchemyError):  # another process created it meanwhile
                metadata.create_all(self._sql, checkfirst=True)
            self._created = True
        row = {"kind": kind, "position": position, "digest": digest, "head": head}
        newest = select(digests.c.id).where(digests.c.kind == kind)
        newest = newest.order_by(digests.c.id.desc()).limit(KEEP)
        with self._sql.begin() as conn:
            conn.execute(insert(digests).values(row))
            kept = [r[0] for r in conn.execute(newest)]
            if len(kept) == KEEP:
                old = and_(digests.c.kind == kind, digests.c.id < min(kept))
                conn.execute(delete(digests).where(old))

    def on_record(self, kind: str, position: int, digest: str, head: str | None) -> bool:
        """Whether this very file (its digest) was written of this store at `position`,
        when the event there was the one whose fingerprint's sha256 is `head`."""
        found = select(digests.c.id).where(
            digests.c.kind == kind,
            digests.c.position == position,
            digests.c.digest == digest,
            digests.c.head.is_(None) if head is None else digests.c.head == head,
        )
        try:
            with self._sql.connect() as conn:
                return conn.execute(found.limit(1)).first() is not None
        except SQLAlchemyError:  # no such table yet: nothing was ever recorded
            return False
