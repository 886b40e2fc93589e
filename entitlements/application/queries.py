"""What the engine answers: checks and capabilities from the in-memory index, the change
feed, the rejection log, an account's history and the log's position."""

from __future__ import annotations

import time
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from entitlements.application.store_app import EntitlementsApplication
from entitlements.application.who_can import Asked, WhoCan, WhoCanPage
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.decisions import Decision, PositionNotReached, UnknownAccount
from entitlements.domain.events import COMMAND_REJECTED, topic
from entitlements.domain.times import When, iso
from projections.changes import changes_after
from projections.log_reader import read_log
from projections.projector import Projector

REJECTION_TOPICS = frozenset({topic(COMMAND_REJECTED)})


class Queries:
    """Answers questions; never writes. Checks read only the index (see `check`)."""

    #: Seconds a min_position check waits for the index (an instance may set its own).
    wait_timeout: float = 2.0

    def __init__(self, app: EntitlementsApplication, projector: Projector) -> None:
        self.app = app
        self.projector = projector

    def wait_for(self, position: int, timeout: float | None = None) -> None:
        """Read your writes: return once the index has reached `position`."""
        timeout = self.wait_timeout if timeout is None else timeout
        if not self.projector.wait_for(position, timeout):
            raise PositionNotReached(position, self.projector.index.position, timeout)

    def changes(
        self, after: int = 0, limit: int = 100, wait: float = 0.0, *, catch_up: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Capability changes recorded after log position `after` (see `Engine.changes`)."""
        feed = self.projector.start_feed()
        if catch_up:
            self.projector.catch_up()

        def read(after: int) -> tuple[list[dict[str, Any]], int]:
            # From the feed kept in memory; from the store for positions before it (the
            # events after `after`, each account's own stream, the region events kept).
            return feed.read(after, limit) or changes_after(self.app, after, limit, feed.regions)

        items, next_position = read(after)
        deadline = time.monotonic() + wait
        while not items and (left := deadline - time.monotonic()) > 0:
            if self.projector.wait_for(next_position + 1, left):
                items, next_position = read(next_position)
        return items, next_position

    def rejections(
        self, account_id: str | None = None, region: str | None = None
    ) -> list[dict[str, Any]]:
        """The rejection log, in log order: every rejected command as given, who asked, the
        reason and both clocks; only an account's or a region's when asked."""
        found = []
        for page in read_log(self.app, 0, topics=REJECTION_TOPICS):
            for position, e in page:
                if (account_id is None or e.account_id == account_id) and (
                    region is None or e.region == region
                ):
                    found.append(_rejection(position, e))
        return found

    def position(self) -> int:
        """The newest log position (notification id); 0 for an empty store."""
        return self.app.recorder.max_notification_id() or 0

    def check(
        self,
        account_id: str,
        capability: str,
        at: When = None,
        as_known_at: When = None,
        min_position: int | None = None,
    ) -> Decision:
        """What the account may do at `at` (default now) as known at `as_known_at`
        (default everything recorded): `engine.check`. Never reads the store, except to
        catch up once when the account is not in the index yet. With `min_position` (the
        position an `apply` returned), answers only once the index has reached it, waiting
        at most `wait_timeout` s, else raises PositionNotReached naming the current
        position."""
        if min_position is not None:
            self.wait_for(min_position)
        index = self.projector.index
        try:
            return index.check(account_id, capability, at, as_known_at)
        except UnknownAccount:
            if not self.projector.catch_up():
                raise
            return self.projector.index.check(account_id, capability, at, as_known_at)

    def capabilities(
        self,
        account_id: str,
        at: When = None,
        as_known_at: When = None,
        min_position: int | None = None,
    ) -> list[Decision]:
        """Every capability at once, in the spec's order."""
        self.check(account_id, "join", at, as_known_at, min_position)  # UnknownAccount, bad times
        return self.projector.index.capabilities(account_id, at, as_known_at)

    def who_can(self, asked: Asked, limit: int = 100, cursor: str | None = None) -> WhoCanPage:
        """The region's accounts `asked.capability` is allowed (or refused) to, a page at a
        time in account id order; `cursor` (a page's `next_cursor`) pins the first page's
        log position (see application/who_can.py)."""
        return WhoCan(self.app, self.projector).page(asked, limit, cursor)

    def history(self, account_id: str) -> list[dict[str, Any]]:
        """The account's events in log order, with both clocks and causes."""
        try:
            account: Account = self.app.repository.get(account_uuid(account_id))
        except AggregateNotFoundError:
            raise UnknownAccount(account_id) from None
        return [f.as_dict() for f in sorted(account.facts, key=lambda f: f.version)]


def _rejection(position: int, e: Any) -> dict[str, Any]:
    """A rejection as the rejection log shows it."""
    return {
        "position": position,
        "command_id": e.command_id,
        "command": e.command,
        "actor": e.actor,
        "account_id": e.account_id,
        "region": e.region,
        "reason": e.reason,
        "request": e.request,
        "effective_at": iso(e.effective_at),
        "recorded_at": iso(e.recorded_at),
    }
