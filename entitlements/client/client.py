"""`Client`: the meeting service's own copy of the check index, answering `check` and
`capabilities` in its process with the same Decision as `Engine.check`, kept current by
the server's push stream, and answering on when the server is away (issue 19).

It starts from GET /v1/snapshot (or a file written by `entitlements snapshot export`),
then one background thread follows GET /v1/stream from its position: each record is
checked against the chain before it is applied (local_copy.py). When the stream breaks it
says since when it is stale, reconnects with backoff, and resumes from its last position
(`Last-Event-ID`): a record it has is skipped, one that does not link to its head refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from entitlements.adapters.integrity import one_line
from entitlements.client.local_copy import LocalCopy
from entitlements.client.sse import events
from entitlements.domain.decisions import Decision, PositionNotReached
from entitlements.domain.times import When

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())  # a library: the meeting service chooses where

BACKOFF = (0.05, 5.0)  # seconds: the first retry, and the longest wait between two
READ_TIMEOUT = 45.0  # seconds with no byte (the server sends a comment every 15 s)


class Stale(RuntimeError):
    """The copy has not heard from the server for longer than `max_staleness`."""


class ClientError(RuntimeError):
    """The client could not start: no snapshot to start from."""


@dataclass(frozen=True)
class Status:
    """Where the copy is: its log position, whether it follows the stream now, and since
    when it may be behind (None while following)."""

    position: int
    connected: bool
    stale_since: datetime | None


class Client:
    """A local copy of the check index, following the server at `url`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        bootstrap: str | Path | None = None,
        max_staleness: float | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        backoff: tuple[float, float] = BACKOFF,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10.0)
        self.max_staleness, self.backoff, self.read_timeout = max_staleness, backoff, read_timeout
        try:
            self.on_change = on_change
            feed = on_change is not None
            self._copy = LocalCopy(Path(bootstrap), feed=feed) if bootstrap else self._download()
        except BaseException:
            self._http.close()
            raise
        self._connected = False
        self._stale_since: float | None = time.time()  # until the stream is followed
        self._response: httpx.Response | None = None  # the stream being read
        self._moved = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="entitlements-client")
        self._thread.daemon = True
        self._thread.start()

    # -- answers -------------------------------------------------------------------------

    def check(
        self, account_id: str, capability: str, at: When = None, as_known_at: When = None
    ) -> Decision:
        """The same Decision as `Engine.check` at this copy's position, answered here."""
        if self.max_staleness is not None and self._stale_since is not None:
            self._fresh()
        return self._copy.index.check(account_id, capability, at, as_known_at)

    def capabilities(
        self, account_id: str, at: When = None, as_known_at: When = None
    ) -> list[Decision]:
        """Every capability at once, in the spec's order (as `Engine.capabilities`)."""
        self.check(account_id, "join", at, as_known_at)  # Stale, UnknownAccount, bad times
        return self._copy.index.capabilities(account_id, at, as_known_at)

    def _fresh(self) -> None:
        since = self._stale_since
        if self.max_staleness is not None and since is not None:
            age = time.time() - since
            if age > self.max_staleness:
                raise Stale(
                    f"stale since {_stamp(since)} ({age:.1f} s, max_staleness "
                    f"{self.max_staleness:g} s), at log position {self._copy.position}"
                )

    @property
    def status(self) -> Status:
        since = self._stale_since
        return Status(self._copy.position, self._connected, None if since is None else _at(since))

    def wait_for(self, position: int, timeout: float = 2.0) -> None:
        """Return once the copy has reached log `position` (an `apply`'s), else raise
        PositionNotReached after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._moved:
            while self._copy.position < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PositionNotReached(position, self._copy.position, timeout)
                self._moved.wait(left)

    # -- start and follow ----------------------------------------------------------------

    def _download(self) -> LocalCopy:
        """GET /v1/snapshot, checked against what the server says it is."""
        try:
            got = self._http.get("/v1/snapshot")
        except httpx.HTTPError as e:
            raise ClientError(f"GET /v1/snapshot: {type(e).__name__}: {e}") from None
        if got.status_code != 200:
            raise ClientError(f"GET /v1/snapshot: {got.status_code} {got.text[:200]}")
        expected = {
            "position": int(got.headers.get("x-position", "-1")),
            "chain_head": got.headers.get("x-chain-head"),
            "digest": got.headers.get("x-snapshot-sha256"),
        }
        with tempfile.TemporaryDirectory(prefix="entitlements-client-") as folder:
            path = Path(folder) / "snapshot.index"
            path.write_bytes(got.content)
            return LocalCopy(path, expected, feed=self.on_change is not None)

    def _follow(self) -> None:
        """Follow the stream until closed: on a break, back off (doubling, with jitter)
        and resume from the copy's position."""
        delay = self.backoff[0]
        while not self._stop.is_set():
            try:
                self._stream()
                delay = self.backoff[0]  # the server ended it (its lifetime): at once
                continue
            except Exception as e:  # noqa: BLE001 - whatever breaks a stream, following goes on
                if not self._stop.is_set():  # (a refused record included: it is not applied)
                    logger.warning(
                        "entitlements client: %s: %s; retrying from position %d",
                        type(e).__name__,
                        one_line(e),
                        self._copy.position,
                    )
            self._went_away()
            self._stop.wait(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff[1])

    def _stream(self) -> None:
        after = str(self._copy.position)
        timeout = httpx.Timeout(10.0, read=self.read_timeout)
        headers = {"Last-Event-ID": after, "Accept": "text/event-stream"}
        with self._http.stream("GET", "/v1/stream", headers=headers, timeout=timeout) as got:
            if got.status_code != 200:
                raise ClientError(f"GET /v1/stream: {got.status_code}")
            self._connected, self._stale_since = True, None
            self._response = got
            for event in events(got.iter_lines()):
                if self._stop.is_set():
                    return
                if event.kind == "record":
                    self._take(json.loads(event.data))
        self._connected = False

    def _take(self, record: Any) -> None:
        if self._copy.apply(record) is None:
            return
        with self._moved:
            self._moved.notify_all()
        if self.on_change is not None:
            for item in self._copy.changes_at(record["position"]):
                try:
                    self.on_change(item)
                except Exception as e:  # the caller's: said, and following goes on
                    logger.warning("entitlements client: on_change raised %s", one_line(e))

    def _went_away(self) -> None:
        self._connected = False
        if self._stale_since is None:
            self._stale_since = time.time()

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop following (the copy stays as it is: answers go on from it)."""
        self._stop.set()
        _interrupt(self._response)
        self._thread.join(10)
        self._http.close()
        self._went_away()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _interrupt(response: httpx.Response | None) -> None:
    """End a stream's blocking read from another thread: shut its socket down."""
    stream = None if response is None else response.extensions.get("network_stream")
    sock = None if stream is None else stream.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _stamp(t: float) -> str:
    return _at(t).isoformat()
