"""One HTTP worker process: its engine, its tokens and how fresh its answers are, whatever
the store does.

A worker answers checks from its own in-memory index. It opens the engine at start; if
the store is away it starts anyway (`/healthz` says `starting`, 503) and goes on trying in
the background, so a server never dies of an outage. Once open, the engine's follower keeps
the index level with the log and reconnects by itself after a store error; meanwhile checks
go on answering from memory and say since when they may be stale. A housekeeping thread
reads the tokens again and sets this worker's gauges twice a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from entitlements.adapters.store import store_url
from entitlements.adapters.tokens import REFRESH_EVERY, TokenCache
from entitlements.application.access import open_tokens
from entitlements.application.engine import Engine, FollowStatus
from entitlements.domain.decisions import Decision, PositionNotReached, UnknownAccount
from entitlements.domain.times import iso
from entitlements.http.errors import Refused, one_line
from entitlements.http.metrics import Metrics
from entitlements.http.rendered import Rendered
from entitlements.http.schemas import decision_json
from entitlements.http.settings import MAX_STALENESS, POLL

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: How long a worker shutting down waits for the store reads still running in threads.
READS_END_WITHIN = 10.0


class PositionWatch:
    """Wakes the requests waiting for the index to move (long-polls, `min_position`) on the
    event loop, told by the follower's thread: no thread is held by a waiting request."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._moved = asyncio.Event()
        self._pending = False  # a wake-up is scheduled already: one is enough

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def advanced(self, _position: int = 0) -> None:
        """The index moved (any thread)."""
        loop = self._loop
        if loop is not None and not self._pending:
            self._pending = True
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._pending = False
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def until(self, reached: Callable[[], bool], timeout: float) -> bool:
        """Wait until `reached()` or `timeout` seconds; whether it was reached."""
        deadline = time.monotonic() + timeout
        while not reached():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._moved.wait(), left)
            except TimeoutError:
                return reached()
        return True


class Worker:
    """The engine, tokens, metrics and freshness of one worker process."""

    def __init__(
        self,
        url: str | None,
        *,
        follow: bool = True,
        max_staleness: float = MAX_STALENESS,
        poll: float = POLL,
    ) -> None:
        self.url = store_url(url)
        self.following, self.max_staleness, self.poll = follow, max_staleness, poll
        self.engine: Engine | None = None
        self.detail: str | None = None  # why there is no engine yet
        self.stale_since: float | None = None  # the follower's, kept by its on_status
        self.tokens = TokenCache(open_tokens(self.url))
        self.metrics = Metrics()
        self.watch = PositionWatch()
        self.rendered = Rendered()
        self._reconnects = 0  # the follower's reconnects counted in the metrics so far
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._reading = 0  # store reads running in threads (see `off_loop`)
        self._reads_done = threading.Condition()

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        """Read the tokens and open the engine; with the store away, keep trying in the
        background and start anyway."""
        self._refresh_tokens()
        if not self._open():
            self._spawn(self._keep_opening, "entitlements-open")
        self._spawn(self._housekeeping, "entitlements-housekeeping")

    def close(self) -> None:
        """Stop, whatever the store does: a worker shut down during an outage cannot save
        its snapshot (the next start reads the log instead), and says so in one line."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        with self._reads_done:  # SQLite closed under a query crashes the process
            self._reads_done.wait_for(lambda: self._reading == 0, READS_END_WITHIN)
        try:
            if self.engine is not None:
                self.engine.close()
        except Exception as e:  # the store away at shutdown
            logger.warning("worker %d closed without its snapshot: %s", os.getpid(), one_line(e))
        self.tokens.close()

    async def off_loop(self, read: Callable[..., T], *args: Any) -> T:
        """`read(*args)` on a thread, counted until it returns: its awaiting task may be
        cancelled (a stream closed, the server shutting down) while the thread runs on,
        and `close` closes the store only after it."""
        return await run_in_threadpool(self._counted, read, *args)

    def _counted(self, read: Callable[..., T], *args: Any) -> T:
        with self._reads_done:
            self._reading += 1
        try:
            return read(*args)
        finally:
            with self._reads_done:
                self._reading -= 1
                self._reads_done.notify_all()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _open(self) -> bool:
        try:
            engine = Engine(self.url, must_exist=False)
        except Exception as e:  # the store away, or refusing us: tried again later
            self.detail = one_line(e)
            return False
        if self.following:
            engine.follow(self.poll, on_advance=self.watch.advanced, on_status=self._followed)
            self._followed(engine.follower_status())
        self.engine, self.detail = engine, None
        return True

    def _followed(self, status: FollowStatus) -> None:
        """The follower's state changed (its thread): what every answer reads from now."""
        self.stale_since = status.stale_since

    def _keep_opening(self) -> None:
        delay = 0.1
        while not self._stop.wait(delay) and not self._open():
            delay = min(delay * 2, 2.0)

    def _housekeeping(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            self._refresh_tokens()
            self._set_gauges()

    def _refresh_tokens(self) -> None:
        try:
            self.tokens.refresh()
        except Exception as e:  # the store away: the tokens held stay valid
            self.tokens.error = one_line(e)

    def _set_gauges(self) -> None:
        engine = self.engine
        state, since = self.freshness()
        lag = None
        if engine is not None:
            status = engine.follower_status()
            self.metrics.reconnects.inc(max(0, status.reconnects - self._reconnects))
            self._reconnects = max(self._reconnects, status.reconnects)
            if since is None:
                try:
                    lag = max(0, engine.position() - engine.index.position)
                except Exception:  # the store went away since: the follower will say so
                    lag = None
        position = engine.index.position if engine is not None else 0
        follower = {"ready": "following", "degraded": "reconnecting"}.get(state, state)
        stale = time.time() - since if since is not None else 0.0
        self.metrics.worker_state(follower, position, lag, stale)

    # -- freshness -----------------------------------------------------------------------

    def freshness(self) -> tuple[str, float | None]:
        """("starting" | "ready" | "degraded", since when the answers may be stale)."""
        engine = self.engine
        if engine is None:
            return "starting", None
        since = self.stale_since
        return ("ready", None) if since is None else ("degraded", since)

    def health(self) -> tuple[int, dict[str, object]]:
        """`/healthz`: 200 ready or degraded (not for longer than max_staleness), else 503."""
        state, since = self.freshness()
        engine = self.engine
        body: dict[str, object] = {
            "status": state,
            "position": engine.index.position if engine is not None else 0,
            "stale_since": stamp(since),
        }
        if state == "starting":
            body["detail"] = self.detail or "reading the log"
            return 503, body
        too_stale = since is not None and time.time() - since > self.max_staleness
        return (503 if too_stale else 200), body

    def stale_headers(self) -> dict[str, str]:
        """What an answer carries while it may be stale: since when (absent while following)."""
        _, since = self.freshness()
        return {} if since is None else {"Entitlements-Stale-Since": stamp(since) or ""}

    # -- what routes ask -----------------------------------------------------------------

    def ready_engine(self) -> Engine:
        engine = self.engine
        if engine is None:
            raise Refused(503, f"starting: {self.detail or 'reading the log'}")
        return engine

    async def check(
        self, account_id: str, capability: str, at: str | None, as_known_at: str | None
    ) -> Decision:
        """One decision from the index, on the event loop. An account the index does not
        know: a following worker is level with the log already (404 at once, no store
        read an anonymous caller could provoke); one that does not follow catches up first."""
        engine = self.ready_engine()
        try:
            return engine.index.check(account_id, capability, at, as_known_at)
        except UnknownAccount:
            if self.following:
                raise
        return await self.off_loop(engine.check, account_id, capability, at, as_known_at)

    def json(self, d: Decision, at: str | None = None, as_known_at: str | None = None) -> bytes:
        """A decision's JSON: a "now" one's made once (rendered.py), any other each time."""
        if at is None and as_known_at is None:
            return self.rendered.json(d)
        return decision_json(d, at, as_known_at)

    async def reached(self, position: int | None) -> None:
        """Read your writes: return once the index has reached `position`, else raise
        PositionNotReached after the engine's `wait_timeout` (2 s)."""
        engine = self.ready_engine()
        wait = engine.queries.wait_timeout
        if position is not None and not await self.until_position(position, wait):
            raise PositionNotReached(position, engine.index.position, wait)

    async def until_position(self, position: int, timeout: float) -> bool:
        """Whether the index reached `position` within `timeout` s: a following worker
        waits on the event loop for its follower to say so, holding no thread."""
        engine = self.ready_engine()
        if engine.index.position >= position:
            return True
        if self.following:
            return await self.watch.until(lambda: engine.index.position >= position, timeout)
        return bool(await self.off_loop(engine.projector.wait_for, position, timeout))


def stamp(t: float | None) -> str | None:
    return None if t is None else iso(datetime.fromtimestamp(t, UTC))
