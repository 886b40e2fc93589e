"""Keeping projections level with the log: catch-up, follow, rebuild.

- `Projector` (projector.py): the in-memory facts and check index of one process.
- `SqlProjection` / `project`: bring the SQL read models up to the log, incrementally,
  exactly once; a kept `SqlProjection` reads only what is new (`catch-up --follow`).
- `rebuild`: builds every read model from the whole log into fresh tables, in large
  batches, resumable after a kill, ends at the log's head, and swaps them into place at
  the end; queries keep answering from the old tables meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import Application

from entitlements.domain.event_facts import fact_from_event
from entitlements.domain.events import COMMAND_RECORDS
from projections.check_index import CheckIndex
from projections.facts import Changed, LogFacts
from projections.log_reader import read_log
from projections.projector import Projector, gc_paused
from projections.rebuild_read import read_facts
from projections.rebuild_rows import Kinds, Written
from projections.rebuild_writer import Writer
from projections.sql_views import SqlReadModel, sql_engine
from projections.state_intervals import account_rows, region_rows
from projections.timeline import region_timeline

BATCH = int(
    os.environ.get("ENTITLEMENTS_PROJECTION_BATCH", "20000")
)  # events per read-model transaction (catch-up)
ACCOUNTS_PER_TRANSACTION = 5_000  # accounts whose rows a rebuild writes per transaction
SNAPSHOT_EVERY = 10_000  # events caught up before a process saves a new snapshot
#: Events below which a rebuild reads and writes alone: under it a second process wins less
#: than 15% (benchmarks/README.md, the rebuild's figures).
IN_PROCESS_BELOW = 40_000
#: The share of the log a rebuild reads itself, the second process reading the rest (and
#: sending it as JSON, which the first takes in after its own part).
OWN_SHARE = 0.6

#: (done, total): the log position read to, and the position it reads to (a catch-up's
#: head; a rebuild's target, then the head); a rebuild's accounts: see `Told`.
Progress = Callable[[int, int], None]


# -- the SQL read models -------------------------------------------------------------------

#: Reading one stream whole by its aggregate id costs about what taking in this many events
#: of the log in pages does (SQLite, 170,000 events: 83 µs a stream of two events, against
#: 13 µs an event read and decoded, about 20 µs taken into facts). A catch-up whose tail
#: (events past the tables' position) is longer than the log before it over this reads
#: the whole log once instead of each stream the tail touches.
STREAM_READ_COST = 4


class StreamsRead(LogFacts):
    """The facts of only the streams that the log past `position` touches, each whole: the
    first event of a stream begun before `position` brings the stream's earlier events
    with it, read by its aggregate id (the store's own key), so a catch-up reads what is
    new and those streams, never the log before its position."""

    def __init__(self, app: Application[Any], position: int) -> None:
        super().__init__()
        self.app = app
        self.position = position
        self.streams_read = 0  # streams read back by id (their earlier events)

    def _stream(self, event: Any) -> tuple[str, str]:
        if (
            event.originator_version == 1
            or event.originator_id.int in self.stream_of
            or type(event).__name__ in COMMAND_RECORDS
        ):
            return super()._stream(event)
        stored = self.app.recorder.select_events(
            event.originator_id, lte=event.originator_version - 1
        )
        earlier = [self.app.mapper.to_domain_event(s) for s in stored]
        if not earlier or earlier[0].originator_version != 1:
            return super()._stream(event)  # refused: a stream without its first event
        kind, name = super()._stream(earlier[0])
        into = self.accounts if kind == "account" else self.regions
        facts = into.setdefault(name, [])
        facts.extend(fact_from_event(f"{kind}:{name}", e) for e in earlier)
        facts.sort(key=lambda f: f.order)
        self.streams_read += 1
        return kind, name


class SqlProjection:
    """The SQL read models, kept level with the log incrementally: each run reads the log
    past the tables' tracked position only (and the streams it touches, whole), writes
    those streams' rows, and keeps what it read for the next run (`catch-up --follow`)."""

    def __init__(
        self, app: Application[Any], model: SqlReadModel, projector: Projector | None = None
    ) -> None:
        self.app = app
        self.model = model
        # A rebuild's: every stream's facts, and the index, kept level with what is read.
        self.projector = projector
        self.facts: LogFacts | None = projector.facts if projector is not None else None
        self.read_from = 0  # the position the last run read the log past

    @classmethod
    def current(cls, app: Application[Any], url: str) -> SqlProjection:
        """The projection into the current tables of the store at `url` (created if missing)."""
        model = SqlReadModel(sql_engine(url))
        model.create()
        return cls(app, model)

    def close(self) -> None:
        """Give the tables' database connections back (a process that opens and closes
        engines, a test or a library user's, would otherwise hold one per projection)."""
        self.model.engine.dispose()

    def __enter__(self) -> SqlProjection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, progress: Progress | None = None) -> int:
        """Read the log past the tracked position; write the rows of the accounts and regions
        each batch touched (an account's rows depend on its own events only: the view joins
        the region's). Nothing new: nothing read. Returns the position the tables reflect.
        `progress` gets (position read to, the head) after each page."""
        head = self.app.recorder.max_notification_id() or 0
        written = self.model.position()
        self.read_from = written
        if written >= head:
            return written
        facts = self._facts(written, head)
        self.read_from = facts.position
        while facts.position < written:  # kept facts behind the tables, or the whole log
            self._page(facts, written, head, progress)
        pending = Changed()
        while facts.position < head:
            changed = self._page(facts, head, head, progress)
            pending.accounts |= changed.accounts
            pending.regions |= changed.regions
            if facts.position - written >= BATCH or facts.position >= head:
                self.model.write(facts, None, pending.accounts, facts.position, pending.regions)
                written, pending = facts.position, Changed()
        self.facts = facts
        return max(facts.position, written)

    def _facts(self, written: int, head: int) -> LogFacts:
        """What to read into: the facts kept from before when they are not past the tables
        (else the tables went back: a rebuild swapped in); else the streams the tail
        touches, or the whole log when the tail is long (see STREAM_READ_COST)."""
        if self.facts is not None and self.facts.position <= written:
            return self.facts
        self.projector = None
        if (head - written) * STREAM_READ_COST >= written:
            return StreamsRead(self.app, 0)
        return StreamsRead(self.app, written)

    def _page(self, facts: LogFacts, stop: int, head: int, progress: Progress | None) -> Changed:
        """One page of the log, up to `stop`, into facts (and a rebuild's index)."""
        page = next(read_log(self.app, facts.position, stop), [])
        if not page:
            raise RuntimeError(f"the log ends before position {stop}")
        changed = facts.add(page)
        if self.projector is not None:
            self.projector.index.update(facts, changed)
        if progress is not None:
            progress(facts.position, head)
        return changed


def project(app: Application[Any], url: str, progress: Progress | None = None) -> int:
    """Bring the SQL read models up to the log's end, exactly once (tracking in the same
    transaction as the rows), reading only the log past their position and the streams it
    touches. Returns the position reached."""
    return SqlProjection.current(app, url).run(progress)


@dataclass(frozen=True)
class Resumed:
    """A rebuild killed earlier, taken up again: the log position it rebuilds to, the
    accounts whose rows it wrote (in account order, never written again), and whether it
    wrote every row (the regions' too): then it catches the tables up from `target`."""

    target: int
    accounts: int
    rows_done: bool


@dataclass(frozen=True)
class Told:
    """Whom a rebuild tells how it goes. `events`: (log position read to, the position it
    reads to), the log up to the target then on to the head, so it counts the log's events
    exactly; `accounts`: (accounts whose rows are written, every account); `resumed`: once,
    first, when it takes up a rebuild killed earlier."""

    events: Progress | None = None
    accounts: Progress | None = None
    resumed: Callable[[Resumed], None] | None = None


def rebuild(
    app: Application[Any],
    url: str,
    progress: Progress | None = None,
    *,
    accounts: Progress | None = None,
    resumed: Callable[[Resumed], None] | None = None,
) -> int:
    """Rebuild every read model from the log into fresh tables, then swap them in.

    Three phases: read the log up to a target position into memory (facts only: rows come
    straight from them, no timeline is built); write each account's narrow rows exactly
    once, in account order, many accounts per transaction, with a cursor in the same
    transaction, then the regions' with the target; then swap them in (indexed only
    now, under the current names) and bring them to the log's head (what was recorded
    meanwhile) as any catch-up does. The swap never moves the tables backwards: if the
    current ones went past the target meanwhile, the fresh ones are caught up to the head
    first. Killed halfway, it resumes: same target, re-read the log, skip the accounts the
    cursor has passed. Also saves a new check-index snapshot (of the target, while the
    other process swaps; again at the head if the log moved on). Returns the position
    reached. `progress`, `accounts`, `resumed`: see `Told`.

    The cyclic garbage collector is paused meanwhile: the facts are millions of long-lived
    objects, none in a cycle, and it would walk them again and again as they pile up
    (about a third of the time spent reading the log)."""
    with gc_paused():  # counted with the catch-ups' own pauses (other threads, nested)
        return _rebuild(app, url, Told(progress, accounts, resumed))


def _rebuild(app: Application[Any], url: str, told: Told) -> int:
    model = SqlReadModel(sql_engine(url), name="rebuild", suffix="__rebuild")
    try:
        return _rebuild_into(app, url, told, model)
    finally:
        model.engine.dispose()


def _rebuild_into(app: Application[Any], url: str, told: Told, model: SqlReadModel) -> int:
    target = _rebuild_target(app, model, told)
    split = int(target * OWN_SHARE)  # the other process reads the rest of the log meanwhile
    writer = Writer(url, model, (app, split, target)) if target >= IN_PROCESS_BELOW else None
    try:
        rest = (split, writer.pages()) if writer is not None else None
        facts = read_facts(app, target, told.events, rest)
        rows = _Rows(model, facts, writer, told.accounts)
        rows.write_accounts()
        swapped = _write_regions(model, facts, writer, target)
        regions = {code: region_timeline(code, fs) for code, fs in facts.regions.items()}
        rows.index.replace(rows.kinds.codes, regions, facts.position)  # all encoded already
        projector = Projector(app, url, rows.index)
        projector.facts = facts
        projector.save_snapshot()  # of the target
        if writer is not None:
            rows.acknowledged(wait=True)
            swapped = writer.swapped
    finally:
        if writer is not None:
            writer.close()
    if swapped:  # in place at the target: catch the current tables up, as any process does
        position = SqlProjection(app, SqlReadModel(model.engine), projector).run(told.events)
    else:  # resumed past the target, or the current tables went past it meanwhile
        model.repair()  # the indexes, for the catch-up
        position = SqlProjection(app, model, projector).run(told.events)
        model.swap_into_place(position)
    if position > target:  # the log moved on meanwhile: the snapshot too
        projector.save_snapshot()
    # The projector is in a cycle (its follower holds its methods): the facts it holds would
    # wait for the garbage collector, whose pass over them costs about 8x what freeing them
    # by their reference counts does (50,000 accounts: 0.30 against 0.04 s).
    projector.facts = LogFacts()
    return position


class _Rows:
    """A rebuild's second phase: each account's rows, written once, in account order, in
    transactions of ACCOUNTS_PER_TRANSACTION with the cursor (here, or by the other
    process), and each account's check-index entry."""

    def __init__(
        self,
        model: SqlReadModel,
        facts: LogFacts,
        writer: Writer | None,
        told: Progress | None,
    ) -> None:
        self.model, self.facts, self.writer, self.told = model, facts, writer, told
        self.accounts = sorted(facts.accounts)
        self.index = CheckIndex()
        self.now, self.when = datetime.now(UTC), model.when
        self.kinds = Kinds(self.index, self.now, self.when)
        self.sent: set[int] = set()  # kinds whose recipes the other process has
        self.written = Written(self.when)  # times as the rows hold them, written here: the
        # other process, inserting, is the slower of the two while the rows are made

    def write_accounts(self) -> None:
        """Every account past the cursor; those before it (written before a kill) only
        placed in the index."""
        done = self.model.counter("rebuild:accounts") or 0
        every, region_of = self.facts.accounts, self.facts.region_of
        for account_id in self.accounts[:done]:
            self.kinds.place(account_id, region_of[account_id], every[account_id])
        self._tell(done)  # a resumed rebuild counts on from there
        for start in range(done, len(self.accounts), ACCOUNTS_PER_TRANSACTION):
            chunk = self.accounts[start : start + ACCOUNTS_PER_TRANSACTION]
            if self.writer is not None:  # the other process makes the alike ones' rows
                self._send(start, chunk)
                self.acknowledged(wait=False)
            else:
                self._insert(start, chunk)
                self._tell(start + len(chunk))

    def _send(self, start: int, chunk: list[str]) -> None:
        """The rows of a batch's accounts of a kind not met before, and for each of the
        others its kind's number and its times, to the other process, which inserts them."""
        assert self.writer is not None
        every, region_of = self.facts.accounts, self.facts.region_of
        accounts_rows: list[tuple[Any, ...]] = []
        state_rows: list[tuple[Any, ...]] = []
        alike: list[tuple[Any, ...]] = []
        new_kinds: dict[int, Any] = {}
        for account_id in chunk:
            region, facts_of = region_of[account_id], every[account_id]
            kind, us = self.kinds.place(account_id, region, facts_of)
            if kind is None:
                row, states = account_rows(account_id, region, facts_of, self.now, self.when)
                accounts_rows.append(row)
                state_rows.extend(states)
                continue
            if kind.number not in self.sent:
                self.sent.add(kind.number)
                new_kinds[kind.number] = kind.recipes
            alike.append((kind.number, account_id, self.written(us)))
        self.writer.rows(start + len(chunk), accounts_rows, state_rows, alike, new_kinds)

    def _insert(self, start: int, chunk: list[str]) -> None:
        """A batch's rows, with the cursor past it, in one transaction of this process."""
        every, region_of = self.facts.accounts, self.facts.region_of
        accounts_rows: list[tuple[Any, ...]] = []
        state_rows: list[tuple[Any, ...]] = []
        for account_id in chunk:
            row, states = self.kinds.rows(account_id, region_of[account_id], every[account_id])
            accounts_rows.append(row)
            state_rows.extend(states)
        with self.model.engine.begin() as conn:  # fresh tables, past the cursor: no deletes
            self.model.insert_prepared(conn, accounts_rows, state_rows)
            self.model.track(conn, start + len(chunk), "rebuild:accounts")

    def acknowledged(self, wait: bool) -> None:
        """Tell the batches the other process has inserted (all of them: `wait`)."""
        assert self.writer is not None
        for cursor in self.writer.written(wait=wait):
            self._tell(cursor)

    def _tell(self, done: int) -> None:
        if self.told is not None:
            self.told(done, len(self.accounts))


def _write_regions(
    model: SqlReadModel, facts: LogFacts, writer: Writer | None, target: int
) -> bool:
    """Every account written: the regions' rows and the target, then the swap, here or by
    the other process (`writer.swapped` says then). Nothing if a run killed earlier got
    this far. Whether this process swapped the tables in."""
    if model.position() >= target:
        return False
    regions_rows = [
        row
        for code in sorted(facts.regions)
        for row in region_rows(code, facts.regions[code], model.when)
    ]
    if writer is not None:  # it swaps the tables in too, while the snapshot is saved
        writer.end(regions_rows, target)
        return False
    with model.engine.begin() as conn:
        model.insert_prepared(conn, [], [], regions_rows)
        model.track(conn, target)
    return model.swap_into_place(target, unless_behind=True)


def _rebuild_target(app: Application[Any], model: SqlReadModel, told: Told) -> int:
    """The target of a rebuild killed earlier, to resume (said to `told.resumed`); else
    the log's head, with fresh tables (whatever a crashed attempt left is dropped first)."""
    target = model.counter("rebuild:target") if model.exists() else None
    if target is not None:
        model.repair()
        if told.resumed is not None:
            accounts = model.counter("rebuild:accounts") or 0
            told.resumed(Resumed(target, accounts, model.position() >= target))
        return target
    target = app.recorder.max_notification_id() or 0
    model.recreate({"rebuild:target": target})
    return target
