"""Keeping projections level with the log: catch-up, follow, rebuild.

- `Projector`: the in-memory facts and check index of one process. It starts from a
  snapshot (a local JSON file, checked against the log: see snapshot.py) plus a catch-up
  from the snapshot's position, follows the log while the process runs (LISTEN/NOTIFY or
  polling), and saves a new snapshot now and then.
- `SqlProjection` / `project`: bring the SQL read models up to the log, incrementally,
  exactly once; a kept `SqlProjection` reads only what is new (`catch-up --follow`).
- `rebuild`: builds every read model from the whole log into fresh tables, in large
  batches, resumable after a kill, ends at the log's head, and swaps them into place at
  the end; queries keep answering from the old tables meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from sqlalchemy.engine import make_url

from projections import snapshot
from projections.changes import ChangeFeed
from projections.check_index import CheckIndex
from projections.facts import Changed, LogFacts
from projections.sql_views import SqlReadModel, sql_engine

PAGE = 1000  # events per select (raw SQLite reads peak around 1000 rows per select)
BATCH = int(
    os.environ.get("ENTITLEMENTS_PROJECTION_BATCH", "20000")
)  # events per read-model transaction (catch-up)
ACCOUNTS_PER_TRANSACTION = 5_000  # accounts whose rows a rebuild writes per transaction
SNAPSHOT_EVERY = 10_000  # events caught up before a process saves a new snapshot

#: (done, total): events read up to the target position, then (for a rebuild) the target
#: plus the accounts written, out of the target plus all accounts.
Progress = Callable[[int, int], None]


def snapshot_path(url: str) -> Path:
    """Where this process keeps its index snapshot: beside an SQLite file, else in a cache
    folder ($ENTITLEMENTS_CACHE, default ~/.cache/entitlements)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return Path(parsed.database + ".index")
    folder = Path(os.environ.get("ENTITLEMENTS_CACHE", Path.home() / ".cache" / "entitlements"))
    return folder / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".index")


class Projector:
    """Facts and check index of this process, level with the log."""

    def __init__(
        self, app: Application[Any], url: str | None, index: CheckIndex | None = None
    ) -> None:
        self.app = app
        self.facts = LogFacts()
        self.index = index or CheckIndex()
        self.snapshot_file = snapshot_path(url) if url else None
        self._snapshot_position = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: Any = None  # the store's LISTEN/NOTIFY subscription, when following
        self.feed: ChangeFeed | None = (
            None  # capability changes, kept once someone asks (start_feed)
        )

    # -- start: snapshot, then catch up --------------------------------------------------

    def start(self) -> None:
        self.load_snapshot()
        self.catch_up()

    def load_snapshot(self) -> bool:
        """Adopt the saved facts if the file is a snapshot of this very log (the event at
        its position is the one it names); anything else is ignored: the log is read."""
        if self.snapshot_file is None or not self.snapshot_file.exists():
            return False
        try:
            facts, head = snapshot.read(self.snapshot_file)
        except snapshot.SnapshotRefused:
            return False
        if not self._same_log(facts.position, head):
            return False
        with self._lock:
            self.facts = facts
            self.index.replace({}, {}, 0)
            self.index.update(
                facts, Changed(accounts=set(facts.accounts), regions=set(facts.regions))
            )
            self._snapshot_position = facts.position
        return True

    def save_snapshot(self) -> None:
        """Write the facts to a new file and move it into place (atomic)."""
        if self.snapshot_file is None:
            return
        with self._lock:
            position = self.facts.position
            snapshot.write(
                self.snapshot_file, self.facts, self._fingerprint(position), f".tmp{os.getpid()}"
            )
            self._snapshot_position = position

    def _fingerprint(self, position: int) -> dict[str, Any] | None:
        if position == 0:
            return None
        (n,) = self.app.recorder.select_notifications(start=position, limit=1)
        return snapshot.fingerprint(n)

    def _same_log(self, position: int, head: dict[str, Any] | None) -> bool:
        try:
            return self._fingerprint(position) == head
        except ValueError:  # the log is shorter than the snapshot: another store
            return False

    # -- catch up and follow -------------------------------------------------------------

    def catch_up(self) -> int:
        """Read the log past our position into facts and timelines; returns events read."""
        read = 0
        with self._lock:
            while True:
                page = self.app.recorder.select_notifications(
                    start=self.facts.position + 1, limit=PAGE
                )
                self._take((n.id, self.app.mapper.to_domain_event(n)) for n in page)
                read += len(page)
                if len(page) < PAGE:
                    return read

    def absorb(self, recordings: list[Any]) -> None:
        """Take our own just-saved events without reading them back, when nothing else was
        recorded between our position and them (ids follow on exactly); else catch up."""
        with self._lock:
            ids = [r.notification.id for r in recordings]
            if ids and ids == list(
                range(self.facts.position + 1, self.facts.position + 1 + len(ids))
            ):
                self._take((r.notification.id, r.domain_event) for r in recordings)
            else:
                self.catch_up()

    def _take(self, events: Iterable[tuple[int, Any]]) -> None:
        """(position, decoded event) pairs in log order -> facts, then the index."""
        with self._lock:
            if self.feed is None:
                changed = self.facts.add(events)
            else:  # one by one, so the feed sees each event's "before"
                changed = Changed()
                for position, event in events:
                    if position > self.facts.position:
                        taken = self.feed.take(self.facts, position, event)
                        changed.accounts |= taken.accounts
                        changed.regions |= taken.regions
            # Always: a batch of command records alone changes no answer, but the index
            # has reached its position (read-your-writes waits for exactly that).
            self.index.update(self.facts, changed)

    def start_feed(self) -> ChangeFeed:
        """Keep the change feed from now on (an HTTP worker's /v1/changes)."""
        with self._lock:
            if self.feed is None:
                self.feed = ChangeFeed(self.facts.position)
            return self.feed

    def follow(self, interval: float = 0.05) -> None:
        """Keep level with the log in a background thread: through the store's LISTEN/NOTIFY
        subscription where it has one (PostgreSQL), else by polling every `interval` s."""
        if self._thread is not None:
            return
        self.catch_up()
        with contextlib.suppress(NotImplementedError, AttributeError):  # SQLite: poll instead
            self._subscription = self.app.recorder.subscribe(gt=self.facts.position)

        def poll() -> None:
            while not self._stop.wait(interval):
                self.catch_up()

        def listen() -> None:
            for n in self._subscription:
                self._take([(n.id, self.app.mapper.to_domain_event(n))])
                if self._stop.is_set():
                    return

        target = listen if self._subscription is not None else poll
        self._thread = threading.Thread(target=target, name="entitlements-follow", daemon=True)
        self._thread.start()

    def wait_for(self, position: int, timeout: float) -> bool:
        """Catch up until the index has reached `position`, for at most `timeout` seconds
        (first retries within a millisecond, backing off to 10 ms). True if reached."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            if self.index.position >= position or (
                self.catch_up() and self.index.position >= position
            ):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def stop(self) -> None:
        """Stop following; save a snapshot if the log moved on a good deal since the last."""
        self._stop.set()
        if self._subscription is not None:
            self._subscription.stop()
        if self._thread is not None:
            self._thread.join(5)
        if self.facts.position - self._snapshot_position >= SNAPSHOT_EVERY:
            self.save_snapshot()


def affected_accounts(facts: LogFacts, changed: Changed) -> set[str]:
    """Accounts whose read-model rows a batch of events can change: its accounts, and every
    account of a region whose events changed."""
    accounts = set(changed.accounts)
    for region in changed.regions:
        accounts.update(facts.members.get(region, ()))
    return accounts


# -- the SQL read models -------------------------------------------------------------------


class SqlProjection:
    """The SQL read models of one process, kept level with the log incrementally. Facts
    and index stay in memory between runs, so a run (each poll of `catch-up --follow`)
    reads only the log past its own position, and writes only past the tracked one."""

    def __init__(
        self, app: Application[Any], model: SqlReadModel, projector: Projector | None = None
    ) -> None:
        self.app = app
        self.model = model
        self.projector = projector or Projector(app, None)

    @classmethod
    def current(cls, app: Application[Any], url: str) -> SqlProjection:
        """The projection into the current tables of the store at `url` (created if missing)."""
        model = SqlReadModel(sql_engine(url))
        model.create()
        return cls(app, model)

    @property
    def position(self) -> int:
        return self.projector.facts.position

    def run(self, progress: Progress | None = None) -> int:
        """Read the log past our position; write the rows of the accounts each batch
        touched, but only past what the model already tracks (so a resumed run writes
        nothing twice). Returns the position the tables reflect."""
        head = self.app.recorder.max_notification_id() or 0
        written = self.model.position()
        if written < self.position:  # the tables went back (a rebuild swapped in): start over
            self.projector = Projector(self.app, None)
        while self.position < min(written, head):  # already written: only remember
            self._read(min(written, head), head, progress)
        pending = Changed()
        while self.position < head:
            changed = self._read(head, head, progress)
            pending.accounts |= changed.accounts
            pending.regions |= changed.regions
            if self.position - written >= BATCH or self.position >= head:
                facts = self.projector.facts
                self.model.write(
                    facts, self.projector.index, affected_accounts(facts, pending), self.position
                )
                written, pending = self.position, Changed()
        return max(self.position, written)

    def _read(self, stop: int, head: int, progress: Progress | None) -> Changed:
        """One page of the log, up to `stop`, into facts and index."""
        facts, index = self.projector.facts, self.projector.index
        page = self.app.recorder.select_notifications(
            start=facts.position + 1, limit=PAGE, stop=stop
        )
        changed = facts.add((n.id, self.app.mapper.to_domain_event(n)) for n in page)
        index.update(facts, changed)
        if progress is not None:
            progress(facts.position, head)
        return changed


def project(app: Application[Any], url: str, progress: Progress | None = None) -> int:
    """Bring the SQL read models up to the log's end, exactly once (tracking in the same
    transaction as the rows). Reads the log from the start into memory, writes only past
    the tracked position; keep a `SqlProjection` to read only what is new next time.
    Returns the position reached."""
    return SqlProjection.current(app, url).run(progress)


def rebuild(app: Application[Any], url: str, progress: Progress | None = None) -> int:
    """Rebuild every read model from the log into fresh tables, then swap them in.

    Three phases: read the log up to a target position into memory (facts, then every
    timeline once); write each account's rows exactly once, in account order, many
    accounts per transaction, with a cursor in the same transaction; then bring the fresh
    tables incrementally to the log's head (what was recorded meanwhile), so the swap never
    moves the tables backwards. Killed halfway, it resumes: same target, re-read the log,
    skip the accounts the cursor has passed. Also saves a new check-index snapshot.
    Returns the position reached."""
    model = SqlReadModel(sql_engine(url), name="rebuild", suffix="__rebuild")
    target = _rebuild_target(app, model)
    projector = Projector(app, url)
    facts = projector.facts
    while facts.position < target:
        page = app.recorder.select_notifications(start=facts.position + 1, limit=PAGE, stop=target)
        facts.add((n.id, app.mapper.to_domain_event(n)) for n in page)
        if progress is not None:
            progress(facts.position, target)
    projector.index.update(facts, Changed(accounts=set(facts.accounts), regions=set(facts.regions)))
    accounts = sorted(facts.accounts)
    done = model.counter("rebuild:accounts") or 0
    for start in range(done, len(accounts), ACCOUNTS_PER_TRANSACTION):
        chunk = accounts[start : start + ACCOUNTS_PER_TRANSACTION]
        with model.engine.begin() as conn:
            model.replace_rows(conn, facts, projector.index, chunk)
            model.track(conn, start + len(chunk), "rebuild:accounts")
        if progress is not None:
            progress(target + start + len(chunk), target + len(accounts))
    if model.position() < target:  # every account written: the fresh tables reflect the target
        with model.engine.begin() as conn:
            model.track(conn, target)

    def then(done: int, head: int) -> None:  # progress goes on from where the accounts ended
        if progress is not None:
            progress(done + len(accounts), head + len(accounts))

    position = SqlProjection(app, model, projector).run(then)
    model.swap_into_place(position)
    projector.save_snapshot()
    return position


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
