"""A rebuild's second process: it reads the end of the log while the first reads the start,
then inserts the rows while the first works out the next ones, then swaps the new tables in
while the first saves its snapshot.

While the first process reads the start of the log, the second reads the end through an
application of the same class and settings (the store's own mapper and upcasters, through
the one pager), as plain records (`rebuild_read.read_pages`), keeps them until read whole
and then sends them: the first takes them after its own part, in log order.

Inserting is mostly the database's time, but in the same process it holds the GIL between
rows (a thread beside the work was measured slower), so a rebuild of many accounts hands
its rows to a process of its own, through a pipe, as plain values; an account of a kind
met before (rebuild_rows.py) goes as its kind's number and its times, the process filling
in the kind's rows, sent once. Each batch goes in with the rebuild's cursor in one
transaction, as in-process, so a kill anywhere (of either process) leaves whole batches and
a cursor that says which; the first process reports progress as the batches are
acknowledged. At the end it inserts the regions' rows, records the target and swaps the
tables in (`SqlReadModel.swap_into_place`, unless the current tables went past the target
meanwhile), the longest part of which, dropping the old tables and indexing the new, is
then off the first process's path. On SQLite it lets the WAL grow to about 40 MB between
checkpoints while it inserts (`sql_engine(url, bulk_load=True)`) and checkpoints it once
at the end.

The wire format is JSON, one message per pipe message, both ways: the log's records are
Fact rows (`event_facts.fact_row`: times in ISO 8601); rows hold texts, numbers, booleans
and None, and times (datetimes on PostgreSQL) go as ISO 8601 texts, which PostgreSQL's
COPY reads as it reads the datetimes themselves. Reading a message never runs code. The
process is a fresh interpreter running this module (no fork of a process holding
connections; unlike multiprocessing's spawn it never imports the caller's main module); the
store's URL goes down the pipe, not on its command line. It ends when told, when the pipe
closes, or on the first error, which it sends back as one line.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from eventsourcing.application import Application
from eventsourcing.utils import get_topic, resolve_topic

from projections.rebuild_read import Page, read_pages
from projections.rebuild_rows import Recipe, rows_of_kind
from projections.sql_views import SqlReadModel, checkpoint, sql_engine


class WriterFailed(RuntimeError):
    """The writer process stopped on an error (its one line says which)."""


def _plain(value: Any) -> str:
    """A time as COPY and SQLite take it in text; anything else is not a row's value."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a row holds a {type(value).__name__}: not a plain value")


def dumps(message: Any) -> bytes:
    """A message as it crosses the pipe."""
    return json.dumps(message, default=_plain, separators=(",", ":")).encode()


def _send(conn: Connection, message: Any) -> None:
    conn.send_bytes(dumps(message))


def _recv(conn: Connection) -> Any:
    return json.loads(conn.recv_bytes())


def _serve(inbox: Connection, outbox: Connection) -> None:
    """The second process: insert each batch with its cursor, acknowledge it; at the end,
    the regions' rows and the target, then the swap (or, behind, the indexes), then say
    so. The first process gone (its pipe closed), it stops: every batch in is whole, with
    its cursor."""
    try:
        url, name, suffix, part = _recv(inbox)
        if part is not None:
            _read(part, outbox)
        model = SqlReadModel(sql_engine(url, bulk_load=True), name=name, suffix=suffix)
        kinds: dict[int, Any] = {}  # kind number -> its rows' recipes (rebuild_rows)
        while True:
            message = _recv(inbox)
            if message[0] == "rows":
                _insert_batch(model, kinds, message)
                _send(outbox, ["written", message[1]])
            else:
                _send(outbox, ["ended", _end(model, message)])
                return
    except (EOFError, BrokenPipeError):
        return
    except Exception as e:  # noqa: BLE001 - sent back as one line, raised there
        lines = str(e).strip().splitlines() or [""]
        with contextlib.suppress(OSError):
            _send(outbox, ["failed", f"{type(e).__name__}: {lines[0]}"])


def _read(part: list[Any], outbox: Connection) -> None:
    """Read the log past `after` up to `stop` through an application of the first
    process's class and settings, keep the pages (as the JSON they cross in) until read
    whole, then send them: the first process takes them once done with its own part."""
    topic, env, after, stop = part
    app = resolve_topic(topic)(env=env)
    try:
        pages = [dumps(["page", *page]) for page in read_pages(app, after, stop)]
    finally:
        app.close()
    for page in pages:
        outbox.send_bytes(page)
    _send(outbox, ["read"])


def _insert_batch(model: SqlReadModel, kinds: dict[int, Any], message: list[Any]) -> None:
    """One batch's rows, the alike accounts' made from their kind's recipes, with the
    cursor past it, in one transaction."""
    _, cursor, accounts, states, alike, new_kinds = message
    accounts_rows, state_rows = _rows(accounts), _rows(states)
    kinds.update((number, recipes) for number, recipes in new_kinds)
    for number, account_id, times in alike:
        row, states = rows_of_kind(kinds[number], account_id, times)
        accounts_rows.append(row)
        state_rows.extend(states)
    with model.engine.begin() as conn:
        model.insert_prepared(conn, accounts_rows, state_rows)
        model.track(conn, cursor, "rebuild:accounts")


def _rows(lists: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Rows as the database drivers take them (JSON gives lists)."""
    return [tuple(row) for row in lists]


def _end(model: SqlReadModel, message: list[Any]) -> bool:
    """The regions' rows and the target; the swap here, while the first process saves its
    snapshot: not if the current tables went past the target meanwhile (the first then
    catches the new ones up and swaps them in itself). Whether it swapped."""
    _, regions_rows, target = message
    with model.engine.begin() as conn:
        model.insert_prepared(conn, [], [], _rows(regions_rows))
        model.track(conn, target)
    swapped = model.swap_into_place(target, unless_behind=True)
    if not swapped:
        with model.engine.begin() as conn:
            model.index(conn)
    checkpoint(model.engine)  # its WAL, checkpointed seldom while it inserted
    return swapped


class Writer:
    """The first process's end: send batches, read acknowledgements."""

    def __init__(
        self, url: str, model: SqlReadModel, part: tuple[Application[Any], int, int] | None = None
    ) -> None:
        """Start the process, inserting into `model`'s tables of the store at `url`; with
        `part` = (app, after, stop) it first reads that part of the log (`pages`) through an
        application of the same class and settings."""
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
            reading = [get_topic(type(app)), dict(app.env), after, stop]
        self._send([url, model.name, model.tables.suffix, reading])

    def rows(
        self,
        cursor: int,
        accounts_rows: list[tuple[Any, ...]],
        state_rows: list[tuple[Any, ...]],
        alike: list[tuple[int, str, list[Any]]],
        new_kinds: dict[int, tuple[Recipe, tuple[Recipe, ...]]],
    ) -> None:
        """Insert these rows, and those of the `alike` accounts (kind number, account id,
        its times as the rows hold them: rows from the kind's recipes, sent once in `new_kinds`),
        and move the cursor to `cursor`, in one transaction."""
        self._send(["rows", cursor, accounts_rows, state_rows, alike, list(new_kinds.items())])
        self.pending += 1

    def end(self, regions_rows: list[tuple[Any, ...]], target: int) -> None:
        """Insert the regions' rows, record the target reached, and swap the tables in,
        unless the current ones went past it meanwhile (`swapped` says, once `written`);
        if not, create the indexes."""
        self._send(["end", regions_rows, target])
        self.pending += 1

    def _send(self, message: Any) -> None:
        try:
            _send(self._out, message)
        except OSError:  # it stopped: say why, if it said
            self.written(wait=True)
            raise WriterFailed("the writer process ended unexpectedly") from None

    def pages(self) -> Iterator[Page]:
        """The pages of its part of the log, in log order, once it has read them all."""
        while True:
            try:
                message = _recv(self._in)
            except EOFError:
                raise WriterFailed("the writer process ended unexpectedly") from None
            if message[0] == "read":
                return
            if message[0] != "page":
                raise WriterFailed(message[1])
            yield message[1], message[2], message[3]

    def written(self, wait: bool) -> list[int]:
        """Cursors of the batches acknowledged since last asked (all of them: `wait`)."""
        done: list[int] = []
        while self.pending and (wait or self._in.poll()):
            try:
                kind, value = _recv(self._in)
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
