"""A rebuild's second process: it reads part of the log while the first reads the rest,
then inserts the rows while the first works out the next ones, then swaps the new tables in
while the first saves its snapshot.

Inserting is mostly the database's time, but in the same process it holds the GIL between
rows (a thread beside the work was measured slower), so a rebuild of many accounts hands
its rows to a process of its own, through a pipe, as plain tuples (str, bool, None and, on
PostgreSQL, datetimes); an account of a kind met before (rebuild_rows.py) goes as its
kind's number and its times, the process filling in the kind's rows, sent once. Each batch
goes in with the rebuild's cursor in one transaction, as in-process, so a kill anywhere (of
either process) leaves whole batches and a cursor that says which; the first process
reports progress as the batches are acknowledged.

While the first process reads the start of the log, the second reads the end through an
application of the same class and settings (the store's own transcoder and upcasters), as
the same plain records (`rebuild_read.read_pages`), and sends them once read; the first
takes them after its own, in log order. At the end it inserts the regions' rows, records
the target and swaps the tables in (`SqlReadModel.swap_into_place`, unless the current
tables went past the target meanwhile), the longest part of which, dropping the old tables
and indexing the new, is then off the first process's path. On SQLite it lets the WAL grow
to about 40 MB between checkpoints while it inserts (`sql_engine(url, bulk_load=True)`)
and checkpoints it once at the end: 0.2-0.5 s less at 200,000 accounts, alternating.

Messages both ways are pickles of plain values only, read by an unpickler that makes
nothing else (`PLAIN`): nothing of ours crosses, and a forged message could not run code.
The process is a fresh interpreter running this module (no fork of a process holding
connections; unlike multiprocessing's spawn it never imports the caller's main module); the
store's URL goes down the pipe, not on its command line. It ends when told, when the pipe
closes, or on the first error, which it sends back as one line.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic, resolve_topic

from projections import log_reader
from projections.rebuild_read import Page, read_pages
from projections.rebuild_rows import rows_of_kind
from projections.sql_views import SqlReadModel, checkpoint, sql_engine


class WriterFailed(RuntimeError):
    """The writer process stopped on an error (its one line says which)."""


#: What a message may hold besides builtins (str, int, float, bool, None, bytes, tuple,
#: list, dict: no class needed): the times and values the store's transcoder decodes.
PLAIN = {
    ("datetime", "datetime"): datetime,
    ("datetime", "timezone"): timezone,
    ("datetime", "timedelta"): timedelta,
    ("datetime", "date"): date,
    ("uuid", "UUID"): UUID,
    ("decimal", "Decimal"): Decimal,
}


class _PlainUnpickler(pickle.Unpickler):
    """Makes only plain values: any other class or function named in a message (what a
    forged one would call) is refused, so reading a message never runs code of its choice."""

    def find_class(self, module: str, name: str) -> Any:
        found = PLAIN.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"a message names {module}.{name}: not a plain value")
        return found


def _loads(data: bytes | memoryview) -> Any:
    return _PlainUnpickler(io.BytesIO(data)).load()


def _send_plain(conn: Connection, message: Any) -> None:
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _recv_plain(conn: Connection) -> Any:
    return _loads(conn.recv_bytes())


def _serve(inbox: Connection, outbox: Connection) -> None:
    """The second process: first read its part of the log, if asked, and send it as pages;
    then insert each batch with its cursor, acknowledge it; at the end, the regions' rows
    and the target, then the swap (or, behind, the indexes), then say so. The first process
    gone (its pipe closed), it stops: every batch in is whole, with its cursor."""
    reading = True
    try:
        url, name, suffix, part = _recv_plain(inbox)
        if part is not None:
            _read(part, outbox)
        reading = False
        model = SqlReadModel(sql_engine(url, bulk_load=True), name=name, suffix=suffix)
        kinds: dict[int, Any] = {}  # kind number -> its rows' recipes (rebuild_rows)
        while True:
            message = _recv_plain(inbox)
            if message[0] == "rows":
                _, cursor, accounts_rows, state_rows, alike, new_kinds = message
                kinds.update(new_kinds)
                for number, account_id, times in alike:
                    row, states = rows_of_kind(kinds[number], account_id, times)
                    accounts_rows.append(row)
                    state_rows.extend(states)
                with model.engine.begin() as conn:
                    model.insert_prepared(conn, accounts_rows, state_rows)
                    model.track(conn, cursor, "rebuild:accounts")
                _send_plain(outbox, ("written", cursor))
            else:
                _, regions_rows, target = message
                with model.engine.begin() as conn:
                    model.insert_prepared(conn, [], [], regions_rows)
                    model.track(conn, target)
                # The swap here, while the first process saves its snapshot: not if the
                # current tables went past the target meanwhile (the first then catches the
                # new ones up and swaps them in itself).
                swapped = model.swap_into_place(target, unless_behind=True)
                if not swapped:
                    with model.engine.begin() as conn:
                        model.index(conn)
                checkpoint(model.engine)  # its WAL, checkpointed seldom while it inserted
                _send_plain(outbox, ("ended", swapped))
                return
    except (EOFError, BrokenPipeError):
        return
    except Exception as e:  # noqa: BLE001 - sent back as one line, raised there
        lines = str(e).strip().splitlines() or [""]
        said = f"{type(e).__name__}: {lines[0]}"
        with contextlib.suppress(OSError):
            if reading:
                outbox.send_bytes(b"F" + said.encode())
            else:
                _send_plain(outbox, ("failed", said))


def _read(part: tuple[str, dict[str, str], int, int, int], outbox: Connection) -> None:
    """Read the log past `after` up to `stop` through an application of the caller's class
    and settings, keep the pages (pickled: builtins and datetimes only) until read whole,
    then send them: the first process takes them once it has read its own part."""
    topic, env, after, stop, page = part
    app = resolve_topic(topic)(env=env)
    try:
        shared = Shared()
        pages = [
            pickle.dumps(
                (last, [shared.record(r) for r in records], newest), pickle.HIGHEST_PROTOCOL
            )
            for last, records, newest in read_pages(app, after, stop, page)
        ]
    finally:
        app.close()
    for data in pages:
        outbox.send_bytes(b"P" + data)
    outbox.send_bytes(b"E")


class Shared:
    """Equal texts and times of a page made one object each, so pickle writes them once and
    the first process, unpickling, makes them once: a fan-out's records repeat the rule's
    reason, cause and times in every account's. A time is shared only with one of the same
    offset and fold (equal instants in other zones stay apart); numbers are left alone (1,
    1.0 and True are equal); dicts stay one per record."""

    KEEP = 100_000  # values remembered before starting afresh

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def record(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        """A record of `rebuild_read.read_pages`: its id and account id are its own."""
        seen, value = self._seen, self.value
        if len(seen) > self.KEEP:
            seen.clear()
        key, account_id, region, type_, version, effective, recorded, data, cause = record
        return (
            key,
            account_id,
            seen.setdefault(region, region),
            seen.setdefault(type_, type_),
            version,
            value(effective),
            value(recorded),
            value(data),
            value(cause),
        )

    def value(self, v: Any) -> Any:
        kind = type(v)
        if kind is str:
            return self._seen.setdefault(v, v)
        if kind is datetime:
            return self._seen.setdefault((v, v.tzinfo, v.fold), v)
        if kind is dict:
            return {self.value(k): self.value(x) for k, x in v.items()}
        return v


class Writer:
    """The first process's end: send batches, read acknowledgements."""

    def __init__(
        self, url: str, model: SqlReadModel, part: tuple[Application[Any], int, int] | None = None
    ) -> None:
        """Start the process; with `part` = (app, after, stop) it first reads that part of the
        log (`pages`) through an application of the same class and settings."""
        down_read, down_write = os.pipe()
        up_read, up_write = os.pipe()
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(down_read), str(up_write)],
            pass_fds=(down_read, up_write),
        )
        os.close(down_read)
        os.close(up_write)
        self._out = Connection(down_write, readable=False)
        self._in = Connection(up_read, writable=False)
        self.pending = 0  # batches sent, not yet acknowledged
        self.swapped = False  # whether it swapped the new tables in (`end`)
        reading = None
        if part is not None:
            app, after, stop = part
            reading = (get_topic(type(app)), dict(app.env), after, stop, log_reader.PAGE)
        self._send((url, model.name, model.tables.suffix, reading))

    def rows(
        self,
        cursor: int,
        accounts_rows: list[tuple[Any, ...]],
        state_rows: list[tuple[Any, ...]],
        alike: list[tuple[int, str, list[Any]]],
        new_kinds: dict[int, Any],
    ) -> None:
        """Insert these rows, and those of the `alike` accounts (kind number, account id,
        its times as the rows hold them: rows from the kind's recipes, sent once in `new_kinds`),
        and move the cursor to `cursor`, in one transaction."""
        self._send(("rows", cursor, accounts_rows, state_rows, alike, new_kinds))
        self.pending += 1

    def end(self, regions_rows: list[tuple[Any, ...]], target: int) -> None:
        """Insert the regions' rows, record the target reached, and swap the tables in,
        unless the current ones went past it meanwhile (`swapped` says, once `written`);
        if not, create the indexes."""
        self._send(("end", regions_rows, target))
        self.pending += 1

    def _send(self, message: Any) -> None:
        try:
            _send_plain(self._out, message)
        except OSError:  # it stopped: say why, if it said
            self.written(wait=True)
            raise WriterFailed("the writer process ended unexpectedly") from None

    def pages(self) -> Iterator[Page]:
        """The pages of its part of the log, in log order, once it has read them all."""
        while True:
            try:
                data = self._in.recv_bytes()
            except EOFError:
                raise WriterFailed("the writer process ended unexpectedly") from None
            if data[:1] == b"E":
                return
            if data[:1] != b"P":
                raise WriterFailed(data[1:].decode())
            yield _loads(memoryview(data)[1:])

    def written(self, wait: bool) -> list[int]:
        """Cursors of the batches acknowledged since last asked (all of them: `wait`)."""
        done: list[int] = []
        while self.pending and (wait or self._in.poll()):
            try:
                kind, value = _recv_plain(self._in)
            except EOFError:
                raise WriterFailed("the writer process ended unexpectedly") from None
            if kind == "failed":
                raise WriterFailed(value)
            self.pending -= 1
            if kind == "written":
                done.append(value)
            elif kind == "ended":
                self.swapped = value
        return done

    def close(self) -> None:
        """Stop the process: it ends the batch it is inserting (whole, with its cursor) and
        reads no other."""
        self._out.close()
        self._in.close()
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.terminate()  # a batch cut short is rolled back, never half kept
            self._process.wait()


if __name__ == "__main__":
    gc.disable()  # as in the first process: its records are long-lived, none in a cycle
    _serve(
        Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)
    )
