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
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import Application

from projections.check_index import CheckIndex
from projections.facts import COMMAND_RECORDS, Changed, LogFacts, fact_from_event
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
#: Events below which a rebuild reads and writes alone (a second process costs about 0.3 s).
IN_PROCESS_BELOW = 40_000
#: The share of the log a rebuild reads itself, the second process reading the rest: that
#: one also shares its repeated values and pickles its part, and the first unpickles it
#: once done with its own (0.6 measured against 0.55 with the values shared).
OWN_SHARE = 0.6

#: (done, total): events read up to the target position, then (for a rebuild) the target
#: plus the accounts written, out of the target plus all accounts.
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


def rebuild(app: Application[Any], url: str, progress: Progress | None = None) -> int:
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
    other process swaps). Returns the position reached.

    The cyclic garbage collector is paused meanwhile: the facts are millions of long-lived
    objects, none in a cycle, and it would walk them again and again as they pile up
    (about a third of the time spent reading the log)."""
    with gc_paused():  # counted with the catch-ups' own pauses (other threads, nested)
        return _rebuild(app, url, progress)


def _rebuild(app: Application[Any], url: str, progress: Progress | None) -> int:
    model = SqlReadModel(sql_engine(url), name="rebuild", suffix="__rebuild")
    target = _rebuild_target(app, model)
    split = int(target * OWN_SHARE)  # a second process reads the rest of the log meanwhile
    writer = Writer(url, model, (app, split, target)) if target >= IN_PROCESS_BELOW else None
    try:
        rest = (split, writer.pages()) if writer is not None else None
        facts = read_facts(app, target, progress, rest)
        accounts = sorted(facts.accounts)
        index = CheckIndex()
        now, when = datetime.now(UTC), model.when
        kinds = Kinds(index, now, when)
        sent: set[int] = set()  # kinds whose recipes the other process has
        written = Written(when)  # times as the rows hold them, written here: the other
        # process, inserting, is the slower of the two while the rows are made
        done = model.counter("rebuild:accounts") or 0
        every, region_of = facts.accounts, facts.region_of
        for account_id in accounts[:done]:  # written before a kill: only their index codes
            kinds.place(account_id, region_of[account_id], every[account_id])
        total = target + len(accounts)
        for start in range(done, len(accounts), ACCOUNTS_PER_TRANSACTION):
            chunk = accounts[start : start + ACCOUNTS_PER_TRANSACTION]
            accounts_rows, state_rows = [], []
            if writer is not None:  # the other process makes the rows of the alike, inserts
                alike, new_kinds = [], {}
                for account_id in chunk:
                    region, facts_of = region_of[account_id], every[account_id]
                    kind, us = kinds.place(account_id, region, facts_of)
                    if kind is None:
                        row, states = account_rows(account_id, region, facts_of, now, when)
                        accounts_rows.append(row)
                        state_rows.extend(states)
                        continue
                    if kind.number not in sent:
                        sent.add(kind.number)
                        new_kinds[kind.number] = kind.recipes
                    alike.append((kind.number, account_id, written(us)))
                writer.rows(start + len(chunk), accounts_rows, state_rows, alike, new_kinds)
                for cursor in writer.written(wait=False):
                    _report(progress, target + cursor, total)
                continue
            for account_id in chunk:
                row, states = kinds.rows(account_id, region_of[account_id], every[account_id])
                accounts_rows.append(row)
                state_rows.extend(states)
            with model.engine.begin() as conn:  # fresh tables, past the cursor: no deletes
                model.insert_prepared(conn, accounts_rows, state_rows)
                model.track(conn, start + len(chunk), "rebuild:accounts")
            _report(progress, target + start + len(chunk), total)
        swapped = False
        if model.position() < target:  # every account written: regions, the target reached
            regions_rows = [
                row
                for code in sorted(facts.regions)
                for row in region_rows(code, facts.regions[code], when)
            ]
            if writer is not None:  # it swaps the tables in too, while the snapshot is saved
                writer.end(regions_rows, target)
            else:
                with model.engine.begin() as conn:
                    model.insert_prepared(conn, [], [], regions_rows)
                    model.track(conn, target)
                swapped = model.swap_into_place(target, unless_behind=True)
        regions = {code: region_timeline(code, fs) for code, fs in facts.regions.items()}
        index.replace(kinds.codes, regions, facts.position)  # every account encoded already
        projector = Projector(app, url, index)
        projector.facts = facts
        projector.save_snapshot()  # of the target
        if writer is not None:
            for cursor in writer.written(wait=True):
                _report(progress, target + cursor, total)
            swapped = writer.swapped
    finally:
        if writer is not None:
            writer.close()

    def then(done: int, head: int) -> None:  # progress goes on from where the accounts ended
        if progress is not None:
            progress(done + len(accounts), head + len(accounts))

    if swapped:  # in place at the target: catch the current tables up, as any process does
        position = SqlProjection(app, SqlReadModel(model.engine), projector).run(then)
    else:  # resumed past the target, or the current tables went past it meanwhile
        model.repair()  # the indexes, for the catch-up
        position = SqlProjection(app, model, projector).run(then)
        model.swap_into_place(position)
    if position > facts.position:  # the log moved on meanwhile: the snapshot too
        projector.save_snapshot()
    return position


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _rebuild_target(app: Application[Any], model: SqlReadModel) -> int:
    """The target of a rebuild killed earlier, to resume; else the log's head, with fresh
    tables (whatever a crashed attempt left is dropped first)."""
    target = model.counter("rebuild:target") if model.exists() else None
    if target is not None:
        model.repair()
        return target
    target = app.recorder.max_notification_id() or 0
    model.recreate({"rebuild:target": target})
    return target
