"""The follow thread, supervised: it keeps one process's index level with the log through
any store error (a server restart, an outage) and says meanwhile how stale the index may be.

One thread follows the log: through the store's LISTEN/NOTIFY subscription where it has one
(PostgreSQL), else by catching up every `interval` s (SQLite). Whatever the store raises
breaks following off, never the thread: the error is recorded, the thread backs off (0.05 s
doubling to 2 s, jittered), catches up from the store and subscribes again from the position
reached. A catch-up reads everything after the index's position, so nothing is missed, and
positions only move forward, so nothing is taken twice.

A subscription can also stop delivering without an error (eventsourcing's listening thread
and its connection are its own). While subscribed, a heartbeat thread reads the store's
newest position every second; an index that stood still for a whole beat behind what the
store had at the beat before is broken off and caught up, as after an error.

Read `status` as often as wanted (a lock and a small frozen object). `on_advance` and
`on_status` say when the index moved and when the state changed, from the follow threads.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventsourcing.application import Application

from projections.log_reader import Positioned

NOT_FOLLOWING, FOLLOWING, RECONNECTING, STOPPED = (
    "not-following",
    "following",
    "reconnecting",
    "stopped",
)
FIRST_DELAY, LAST_DELAY = 0.05, 2.0  # seconds between attempts to reach the store again
HEARTBEAT = 1.0  # seconds between checks that a subscription still delivers

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FollowStatus:
    """What the follower says of the index, for health checks, metrics and stale answers.

    `state`: "not-following" (follow() not called), "following", "reconnecting" (the store
    failed: the index may be behind it) or "stopped". `position`: the index's. `stale_since`:
    time.time() of the last contact with the store before it failed, None while following.
    `last_error`: the last store error, one line (kept after recovery). `reconnects`: how
    many times following broke off. `last_contact`: time.time() of the last successful
    read, notification or heartbeat (0.0: none yet)."""

    state: str
    position: int
    stale_since: float | None
    last_error: str | None
    reconnects: int
    last_contact: float

    def stale_for(self, now: float | None = None) -> float:
        """Seconds the index may be behind the store: 0.0 unless it lost the store."""
        if self.stale_since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.stale_since)


class FollowBroken(Exception):
    """The subscription ended though nobody stopped the follower (the heartbeat found it
    silent, or the store could not be read to check it)."""


def one_line(error: BaseException) -> str:
    """An error as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class Follower:
    """Keeps an index level with the log in background threads, whatever the store does."""

    def __init__(
        self,
        app: Application[Any],
        catch_up: Callable[[], int],
        take: Callable[[list[Positioned]], None],
        position: Callable[[], int],
        on_advance: list[Callable[[int], None]],
        on_status: list[Callable[[FollowStatus], None]],
    ) -> None:
        """`catch_up` reads the log past the index into it, `take` gives it events in log
        order (skipping positions it has), `position` is the index's; `on_advance` and
        `on_status` are the lists of callbacks (the caller's own: it adds to them)."""
        self._app, self._catch_up, self._take, self._position = app, catch_up, take, position
        self.on_advance, self.on_status = on_advance, on_status
        self._lock = threading.Lock()  # the status fields and the current subscription
        self._state = NOT_FOLLOWING
        self._stale_since: float | None = None
        self._last_error: str | None = None
        self._reconnects = 0
        self._last_contact = 0.0
        self._subscription: Any = None  # the store's LISTEN/NOTIFY subscription, if current
        self._dropped: str | None = None  # why the heartbeat ended the subscription
        self._polls = False  # the store has no subscriptions (SQLite): catch up every interval
        self._interval = 0.05
        self._announced = 0  # the position last given to on_advance
        self._announce_lock = threading.Lock()  # one announcement at a time, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None

    @property
    def status(self) -> FollowStatus:
        """The state now (thread-safe, about a microsecond)."""
        with self._lock:
            return FollowStatus(
                self._state,
                self._position(),
                self._stale_since,
                self._last_error,
                self._reconnects,
                self._last_contact,
            )

    def start(self, interval: float = 0.05) -> None:
        """Catch up once, then follow in a thread until `stop`. Never raises for the store:
        if it cannot be read now, the follower starts out reconnecting."""
        if self._thread is not None:
            return
        self._interval = interval
        self._announced = self._position()
        self._attempt(self._reach_store)
        self._thread = threading.Thread(target=self._run, name="entitlements-follow", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following; wait up to `timeout` s for each thread to end."""
        self._stop.set()
        with self._lock:
            subscription = self._subscription
        if subscription is not None:
            subscription.stop()
        for thread in (self._thread, self._heartbeat):
            if thread is not None:
                thread.join(timeout)
        if self._thread is not None:
            self._change(STOPPED)

    # -- the follow thread ---------------------------------------------------------------

    def _run(self) -> None:
        """Follow while the store answers; else back off and reach it again, until stopped."""
        delay = FIRST_DELAY
        while not self._stop.is_set():
            if self._state == FOLLOWING:
                delay = FIRST_DELAY
                self._attempt(self._stay_level)
            elif not self._stop.wait(delay * random.uniform(0.8, 1.2)):
                delay = min(delay * 2, LAST_DELAY)
                self._attempt(self._reach_store)
        self._change(STOPPED)

    def _attempt(self, step: Callable[[], None]) -> None:
        """Run `step`; whatever it raises (the store's errors, psycopg's, sqlite3's,
        SQLAlchemy's, OSError, a subscription ended) breaks following off, not the thread."""
        try:
            step()
        except Exception as e:
            if not self._stop.is_set():
                self._change(RECONNECTING, one_line(e))

    def _reach_store(self) -> None:
        """Catch up from the store: following again once it answers."""
        if self._state == RECONNECTING:
            self._drop_dead_connections()
        self._catch_up()
        self._contact()
        self._change(FOLLOWING)
        self._announce()

    def _drop_dead_connections(self) -> None:
        """Have psycopg_pool's pool (PostgreSQL) test its idle connections now and replace
        the dead ones. Else, after a server restart, the next read meets them dead one by
        one, sleeping 1, 2, 4 s between them (the pool's pre-ping backoff): measured, the
        catch-up took 5.2 s after `pg_ctl restart`, against 0.9 s with this."""
        pool = getattr(getattr(self._app.recorder, "datastore", None), "pool", None)
        try:
            from psycopg_pool import ConnectionPool
        except ImportError:  # installed without PostgreSQL support: no such pool
            return
        if isinstance(pool, ConnectionPool):
            pool.check()

    def _stay_level(self) -> None:
        """Take what the log records, until stopped; raises what broke it off."""
        if not self._polls:
            try:
                subscription = self._app.recorder.subscribe(gt=self._position())
            except (NotImplementedError, AttributeError):  # SQLite: poll instead
                self._polls = True
            else:
                self._listen(subscription)
                return
        while not self._stop.wait(self._interval):
            self._catch_up()
            self._contact()
            self._announce()

    def _listen(self, subscription: Any) -> None:
        """Take each notification the subscription yields; its exit joins its threads."""
        with self._lock:
            self._subscription, self._dropped = subscription, None
        if self._stop.is_set():  # stop() came before the subscription was current
            subscription.stop()
        self._start_heartbeat()
        try:
            with subscription:
                for n in subscription:
                    if n.id > self._position():  # else a catch-up or our own write took it
                        self._take([(n.id, self._app.mapper.to_domain_event(n))])
                    self._contact()
                    self._announce()
        finally:
            with self._lock:
                self._subscription = None
        if not self._stop.is_set():
            raise FollowBroken(self._dropped or "the subscription ended")

    # -- the heartbeat thread ------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(
                target=self._beat, name="entitlements-follow-heartbeat", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        """Every HEARTBEAT s while subscribed: the store's newest position, read without the
        index's lock. An index that has not moved for a whole beat while behind what the
        store had at the beat before is not being delivered to: the subscription is ended,
        and the follow thread catches up and subscribes again."""
        before: tuple[int, int] | None = None  # (store's newest, index) at the last beat
        while not self._stop.wait(HEARTBEAT):
            with self._lock:
                subscription = self._subscription
            if subscription is None:
                before = None
                continue
            try:
                newest = self._app.recorder.max_notification_id() or 0
            except Exception as e:
                self._drop(subscription, f"heartbeat: {one_line(e)}")
                before = None
                continue
            self._contact()
            position = self._position()
            if before is not None and position == before[1] < before[0]:
                self._drop(
                    subscription,
                    f"the subscription stopped delivering: index at {position}, "
                    f"store at {before[0]} a beat ago",
                )
            before = (newest, position)

    def _drop(self, subscription: Any, why: str) -> None:
        """End `subscription` if still current, saying why (the follow thread raises it)."""
        with self._lock:
            if self._subscription is not subscription:
                return
            self._dropped = why
        subscription.stop()

    # -- status and callbacks ------------------------------------------------------------

    def _contact(self) -> None:
        self._last_contact = time.time()  # one float: no lock needed to write it

    def _change(self, state: str, error: str | None = None) -> None:
        """Move to `state` (recording `error`); tell on_status when the state changed.
        Losing the store marks the index stale since the last contact; once stopped, the
        follower stays stopped."""
        with self._lock:
            before = self._state
            if before == STOPPED:
                return
            if error is not None:
                self._last_error = error
            if state == RECONNECTING and before != RECONNECTING:
                self._reconnects += 1
                self._stale_since = self._last_contact or time.time()
            elif state != RECONNECTING:
                self._stale_since = None
            self._state = state
        if state == before:
            if error is not None:
                logger.debug("the store is still unreachable: %s", error)
            return
        if state == RECONNECTING:
            logger.warning("following the log broke off, reconnecting: %s", error)
        else:
            logger.info("follower %s (was %s)", state, before)
        status = self.status
        for callback in list(self.on_status):
            try:
                callback(status)
            except Exception:
                logger.exception("an on_status callback failed")

    def _announce(self) -> None:
        """Tell on_advance the index's position when it moved on since the last time it was
        told, however it moved (this thread's reads, or this process's own writes)."""
        with self._announce_lock:
            position = self._position()
            if position <= self._announced:
                return
            self._announced = position
            for callback in list(self.on_advance):
                try:
                    callback(position)
                except Exception:
                    logger.exception("an on_advance callback failed")
