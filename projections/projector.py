"""One process's in-memory view of the log: facts and the check index, kept level.

The `Projector` starts from a snapshot (a local JSON file, checked against the log: see
snapshot.py) plus a catch-up from the snapshot's position, follows the log while the process
runs (LISTEN/NOTIFY on PostgreSQL, polling on SQLite), and saves a new snapshot now and then.
Other consumers of the same events (the writer's own copy of the log, on the engine's side)
subscribe with `also`, so the log is read and decoded once per process.
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
from projections.log_reader import Positioned, read_log

SNAPSHOT_EVERY = 10_000  # events caught up before a process saves a new snapshot


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
        self.feed: ChangeFeed | None = None  # capability changes, once asked for (start_feed)
        # Who else takes the command records read (the writer's command book), with the
        # position reached: called under `lock`, in log order, after the facts took them.
        self.on_records: list[Callable[[list[Positioned], int], None]] = []

    @property
    def lock(self) -> threading.RLock:
        """Held while the facts and the index move: hold it to see them stand still."""
        return self._lock  # type: ignore[return-value]

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
                self.snapshot_file, self.facts, self.fingerprint(position), f".tmp{os.getpid()}"
            )
            self._snapshot_position = position

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
        with self._lock:
            for page in read_log(self.app, self.facts.position):
                self._take(page)
                read += len(page)
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

    def _take(self, events: Iterable[Positioned]) -> None:
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
                        changed.records += taken.records
            for consumer in self.on_records:
                consumer(changed.records, self.facts.position)
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
