"""One process's in-memory view of the log: the light log and the check index, kept level.

The `Projector` starts from a snapshot (a local JSON file, checked against the log: see
snapshot.py) plus a catch-up from the snapshot's position, follows the log while the process
runs (LISTEN/NOTIFY on PostgreSQL, polling on SQLite; through store errors: see follower.py),
and saves a new snapshot now and then. Other consumers of the same events (the writer's own
copy of the log, on the engine's side) subscribe with `also`, so the log is read and decoded
once per process.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from sqlalchemy.engine import make_url

from entitlements.domain.events import ACCOUNT_REGISTERED, REGION_OPENED
from projections import snapshot, snapshot_digests
from projections.changes import ChangeFeed
from projections.check_index import CheckIndex
from projections.facts import Changed, LogFacts
from projections.follower import Follower, FollowStatus
from projections.light_log import LightLog
from projections.log_reader import Positioned, read_log

SNAPSHOT_EVERY = 10_000  # events caught up before a process saves a new snapshot

_gc_lock = threading.Lock()
_gc_pauses = 0  # pauses under way in this process (threads, nested calls)
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused meanwhile, for the whole process (pauses of
    several threads or nested calls count: the last one out restores it). A long read of
    the log, or a fan-out, makes millions of objects, none in a cycle, and the collector
    would walk the long-lived ones again and again (measured: a catch-up of a 100,000-account
    fan-out 4.4 s against 3.5 s paused)."""
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


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
        # The log as the check index holds it (LightLog: no Fact per account), whether read
        # from a snapshot or from the log, until something needs every Fact in memory (a
        # rebuild: `facts`); from then on as LogFacts.
        self.index = index or CheckIndex()
        self._facts: LogFacts | None = None
        self._light: LightLog | None = LightLog(self.index, 0, None, {}, {}, self._stream_of)
        self.snapshot_file = snapshot_path(url) if url else None
        # The store's record of the snapshot files written of it (snapshot_digests.py)
        self.digests = snapshot_digests.Digests(url) if url else None
        self._snapshot_position = 0
        self._refused = False  # the file was refused: replace it at `stop` (one notice, once)
        self._lock = threading.RLock()
        self.feed: ChangeFeed | None = None  # capability changes, once asked for (start_feed)
        # Who else takes the command records read (the writer's command book), with the
        # position reached: called under `lock`, in log order, after the facts took them.
        self.on_records: list[Callable[[list[Positioned], int], None]] = []
        # Who wants to know, once `follow` runs, that the index moved on (called with its
        # position) or that following changed state (called with the status): called from
        # the follow threads, outside the lock, after the index took the events; keep them
        # quick (an event loop's call_soon_threadsafe). See follower.py.
        self.on_advance: list[Callable[[int], None]] = []
        self.on_status: list[Callable[[FollowStatus], None]] = []
        self._follower = Follower(
            app, self.catch_up, self._take, self._index_position, self.on_advance, self.on_status
        )

    @property
    def facts(self) -> LogFacts:
        """Every account's and region's facts. A process keeps only the light log and the
        check index until something asks for them (a rebuild; never a command, nor the
        change feed, which works on the light log): they are built from the index then,
        once (about 20 s a million accounts), and kept from then on."""
        if self._facts is None:
            with self._lock:
                if self._facts is None:
                    assert self._light is not None
                    self._facts = self._light.materialize()
                    self._light = None
        return self._facts

    @facts.setter
    def facts(self, facts: LogFacts) -> None:
        with self._lock:
            self._facts, self._light = facts, None

    @property
    def log(self) -> LogFacts | LightLog:
        """Where events go, and what a writer decides with: the light log (no Facts), or
        the facts once something asked for them."""
        log = self._facts if self._facts is not None else self._light
        assert log is not None
        return log

    @property
    def lock(self) -> threading.RLock:
        """Held while the facts and the index move: hold it to see them stand still."""
        return self._lock

    # -- start: snapshot, then catch up --------------------------------------------------

    def start(self) -> None:
        self.load_snapshot()
        self.catch_up()

    def load_snapshot(self) -> bool:
        """Adopt the saved check index if the file is on record in the store (its digest,
        for its position) and of this very log (the event at its position is the one it
        names); anything else is ignored, said on stderr and counted: the log is read.
        No Fact per account is built: the process keeps a LightLog until facts are asked."""
        path = self.snapshot_file
        if path is None or self.digests is None or not path.exists():
            return False
        try:
            loaded, head = snapshot.read_index(path)
        except snapshot.SnapshotRefused as e:
            snapshot_digests.refuse("index", path, str(e))
            self._refused = True
            return False
        why = self.unbound("index", loaded.position, loaded.digest, head)
        if why is not None:
            snapshot_digests.refuse("index", path, why)
            self._refused = True
            return False
        self.adopt(loaded)
        self._snapshot_position = loaded.position
        return True

    def adopt(self, loaded: snapshot.Loaded) -> None:
        """Take a read snapshot's index and regions as this process's, at its position (a
        what-if's copy of a log takes its source's this way instead of reading the log)."""
        with self._lock:
            self._light = loaded.into(self.index, self._stream_of)
            self._facts = None

    def unbound(
        self, kind: str, position: int, digest: str, head: dict[str, Any] | None
    ) -> str | None:
        """Why a snapshot file of `kind` (its position, digest and head as read) may not be
        used with this store; None when it may: the event at its position is the one it
        names, and the store has its digest on record for that position and event."""
        if not self._same_log(position, head):
            return f"not of this log at position {position}"
        assert self.digests is not None
        if not self.digests.on_record(kind, position, digest, snapshot_digests.head_of(head)):
            return f"its digest is not on record in the store for position {position}"
        return None

    def bind(self, kind: str, head: dict[str, Any] | None) -> Callable[[int, str], None]:
        """What records a snapshot file of `kind` in the store as it is written."""
        digests = self.digests
        assert digests is not None

        def record(position: int, digest: str) -> None:
            digests.record(kind, position, digest, snapshot_digests.head_of(head))

        return record

    def _stream_of(self, originator_id: Any) -> tuple[str, str] | None:
        """Which stream an aggregate is, from its first event in the store (a LightLog asks
        this of an account it holds no Fact of, once per event of it met while following)."""
        stored = self.app.recorder.select_events(originator_id, lte=1, limit=1)
        if not stored:
            return None
        first: Any = self.app.mapper.to_domain_event(stored[0])
        if type(first).__name__ == ACCOUNT_REGISTERED:
            return ("account", first.account_id)
        if type(first).__name__ == REGION_OPENED:
            return ("region", first.region)
        return None

    def save_snapshot(self) -> None:
        """Write the facts to a new file and move it into place (atomic)."""
        if self.snapshot_file is None:
            return
        with self._lock:
            log = self.log
            position = log.position
            if isinstance(log, LogFacts) and (
                self.index.position != position or len(self.index.accounts) != len(log.accounts)
            ):  # facts read without the index (a rebuild): the index takes them all
                changed = Changed(accounts=set(log.accounts), regions=set(log.regions))
                self.index.update(log, changed)
            head = self.fingerprint(position)
            snapshot.write_index(
                self.snapshot_file,
                self.index,
                log,
                log.members,
                head,
                f".tmp{os.getpid()}",
                self.bind("index", head),
            )
            self._snapshot_position = position
            self._refused = False

    def fingerprint(self, position: int) -> dict[str, Any] | None:
        """What identifies the log's event at `position` (see snapshot.fingerprint); None
        for position 0. ValueError when the log is shorter: another store."""
        if position == 0:
            return None
        (n,) = self.app.recorder.select_notifications(start=position, limit=1)
        return snapshot.fingerprint(n)

    def _same_log(self, position: int, head: dict[str, Any] | None) -> bool:
        try:
            return self.fingerprint(position) == head
        except ValueError:  # the log is shorter than the snapshot: another store
            return False

    # -- catch up and follow -------------------------------------------------------------

    def catch_up(self) -> int:
        """Read the log past our position into facts and timelines; returns events read."""
        read = 0
        with self._lock, gc_paused():
            for page in read_log(self.app, self.log.position):
                self._take(page)
                read += len(page)
            log = self.log
            if read and isinstance(log, LightLog):
                log.compact((), every=1)  # what the catch-up changed, encoded
        return read

    def absorb(self, recordings: list[Any]) -> None:
        """Take our own just-saved events without reading them back, when nothing else was
        recorded between our position and them (ids follow on exactly); else catch up."""
        with self._lock:
            ids = [r.notification.id for r in recordings]
            position = self.log.position
            if ids and ids == list(range(position + 1, position + 1 + len(ids))):
                self._take((r.notification.id, r.domain_event) for r in recordings)
            else:
                self.catch_up()

    def _take(self, events: Iterable[Positioned]) -> None:
        """(position, decoded event) pairs in log order -> facts, then the index."""
        with self._lock:
            log = self.log
            if self.feed is None:
                self._level(log, log.add(events))
                return
            for position, event in events:  # one by one, so the feed sees each "before"
                if position > log.position:
                    # A LightLog keeps only the last add's accounts: the index takes each.
                    self._level(log, self.feed.take(log, position, event))

    def _level(self, log: LogFacts | LightLog, changed: Changed) -> None:
        """The command records to whoever keeps them, then the index, level with `log`."""
        for consumer in self.on_records:
            consumer(changed.records, log.position)
        # Always: a batch of command records alone changes no answer, but the index
        # has reached its position (read-your-writes waits for exactly that).
        self.index.update(log, changed)
        if isinstance(log, LightLog):
            log.compact(changed.accounts)

    def start_feed(self) -> ChangeFeed:
        """Keep the change feed from now on (an HTTP worker's /v1/changes). It works on the
        log as this process keeps it, LightLog or LogFacts: no Fact per account is built."""
        with self._lock:
            if self.feed is None:
                self.feed = ChangeFeed(self.log.position)
            return self.feed

    def follow(self, interval: float = 0.05) -> None:
        """Keep level with the log in a background thread: through the store's LISTEN/NOTIFY
        subscription where it has one (PostgreSQL), else by polling every `interval` s. A
        store error never ends it: it reconnects (see follower.py and `status`)."""
        self._follower.start(interval)

    @property
    def status(self) -> FollowStatus:
        """How following goes: state, position, since when the index may be stale."""
        return self._follower.status

    def _index_position(self) -> int:
        return self.index.position

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
        """Stop following; save a snapshot if the log moved on a good deal since the last, or
        if the file was refused (the next process starts from one on record, silently)."""
        self._follower.stop()
        if self._refused or self.log.position - self._snapshot_position >= SNAPSHOT_EVERY:
            self.save_snapshot()
