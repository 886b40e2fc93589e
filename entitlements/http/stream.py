"""The pushed streams of one worker (issue 19): GET /v1/stream's log records and the
snapshot GET /v1/snapshot serves, shared by every client of the worker.

No thread per client and no store read per client: a client's generator waits on the
event loop for the follower to say the index moved (PositionWatch, told by the projector's
on_advance), then takes the new records from `RecordHub`, which reads them from the store
once for every client (one read at a time) and keeps the last `keep` of them. A client
resuming from further back reads its own pages from the store until it is within them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from functools import partial

from entitlements.application.replica import Exported, encoded, records_after, snapshot_bytes
from entitlements.http.errors import one_line
from entitlements.http.schemas import MAX_BATCH
from entitlements.http.worker import Worker

logger = logging.getLogger(__name__)

HEARTBEAT = 15.0  # seconds between two comment lines on an idle stream
KEEP = 10_000  # recent records a worker keeps for its streams
#: Seconds a stream lasts before the server ends it; the client resumes from its last id
#: (Last-Event-ID), on whichever worker takes it: streams spread again over the workers
#: after a restart, and no connection is held for ever.
LIFETIME = 300.0


def event(position: int | None, data: str, kind: str) -> bytes:
    """One Server-Sent Event: `id:` the position (none: the last id stands), one `data:`
    line of JSON."""
    head = "" if position is None else f"id: {position}\n"
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


async def change_stream(
    worker: Worker, after: int, heartbeat: float, lifetime: float
) -> AsyncIterator[bytes]:
    """GET /v1/changes/stream: the items of /v1/changes after `after`, as they are
    recorded, read from the worker's change feed in memory. The items of one position
    go out together, the last of them carrying `id:` (so Last-Event-ID is always a
    position whose items were all received)."""
    engine = worker.ready_engine()
    read = partial(engine.changes, limit=MAX_BATCH, catch_up=not worker.following)
    last, ends = after, time.monotonic() + lifetime
    yield b": following the change feed\n\n"
    while (left := ends - time.monotonic()) > 0:
        items, next_position = await worker.off_loop(read, last)
        for i, item in enumerate(items):
            done = i + 1 == len(items) or items[i + 1]["position"] != item["position"]
            yield event(item["position"] if done else None, json.dumps(item), "change")
        last = next_position
        if items:
            continue
        if not await worker.until_position(last + 1, min(heartbeat, left)):
            yield b": keep-alive\n\n"


class RecordHub:
    """The log's recent records, read once for every stream of the worker."""

    def __init__(self, worker: Worker, heartbeat: float = HEARTBEAT, keep: int = KEEP) -> None:
        self.worker, self.heartbeat, self.keep = worker, heartbeat, keep
        self.lifetime = LIFETIME
        self._recent: deque[tuple[int, str]] = deque()
        self._base: int | None = None  # `_recent` holds every record after this position
        self._end = 0  # ... up to this one
        self._lock = asyncio.Lock()

    async def _pull(self) -> None:
        """Read what the store has after `_end`, once the index has moved past it (one
        reader at a time: the others wait and then find the records here, with no store
        read of their own)."""
        engine = self.worker.ready_engine()
        async with self._lock:
            if self._base is None:
                self._base = self._end = engine.index.position
            while self._end < engine.index.position and (
                records := await self.worker.off_loop(records_after, engine, self._end)
            ):
                for r in records:
                    self._recent.append((r["position"], encoded(r)))
                self._end = records[-1]["position"]
            while len(self._recent) > self.keep:
                self._base = self._recent.popleft()[0]

    async def after(self, position: int) -> list[tuple[int, str]]:
        """The records after `position` that are known now (a page at most when read
        from further back than the recent ones)."""
        await self._pull()
        assert self._base is not None
        if position < self._base:
            engine = self.worker.ready_engine()
            records = await self.worker.off_loop(records_after, engine, position)
            return [(r["position"], encoded(r)) for r in records]
        newer = []
        for p, data in reversed(self._recent):  # from the newest: a stream is a few behind
            if p <= position:
                break
            newer.append((p, data))
        newer.reverse()
        return newer

    async def stream(self, after: int) -> AsyncIterator[bytes]:
        """Every record after `after`, in order, as it is recorded; a comment line when
        `heartbeat` seconds pass with nothing to send; ends after `lifetime` seconds."""
        last, ends = after, time.monotonic() + self.lifetime
        yield b": following the log\n\n"
        while (left := ends - time.monotonic()) > 0:
            records = await self.after(last)
            for position, data in records:
                yield event(position, data, "record")
                last = position
            if records:
                continue
            if not await self.worker.until_position(last + 1, min(self.heartbeat, left)):
                yield b": keep-alive\n\n"


class SnapshotCache:
    """The snapshot every client of the worker starts from. It is made again only once the
    index has moved `behind` records past it (default KEEP, what the streams keep in
    memory): a client that starts from it takes the rest from the stream, and a log that
    moves on every second does not have the whole index written (seconds at a million
    accounts, under the projector's lock) for every client that starts."""

    def __init__(self, worker: Worker, behind: int = KEEP) -> None:
        self.worker = worker
        self.behind = behind
        self.exports = 0  # how many times the index was written for clients
        self._made: tuple[bytes, Exported] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> tuple[bytes, Exported]:
        engine = self.worker.ready_engine()
        async with self._lock:
            made = self._made
            if made is None or not 0 <= engine.index.position - made[1].position <= self.behind:
                self.exports += 1
                made = self._made = await self.worker.off_loop(snapshot_bytes, engine)
            return made

    async def warm(self, every: float = 0.1) -> None:
        """Make the first snapshot as soon as the worker's index is loaded (a task the
        worker starts with it), so that no client pays for it: a request arriving
        meanwhile waits for this export (the lock) and is served its bytes."""
        while self.worker.engine is None:
            await asyncio.sleep(every)
        try:
            await self.get()
        except Exception as e:  # the store away: the first request tries again
            logger.warning("worker %d: no snapshot made at start: %s", os.getpid(), one_line(e))


def last_event_id(header: str | None, after: int) -> int:
    """Where a stream resumes: `Last-Event-ID` when the client sends one, else `after`;
    ValueError naming the header when it is not a position."""
    if header is None:
        return after
    if not header.strip().isdigit():
        raise ValueError("Last-Event-ID: expected a log position (a whole number >= 0)")
    return int(header.strip())
