"""Who-can: the region's accounts a capability is allowed (or refused) to, paged by a cursor
that pins the log position of the first page.

The pin: the first page is answered at the index's position P, with `at` (default: now)
and `as_known_at` (default: everything) made explicit, K being no later than the newest
`recorded_at` at P. A store's `recorded_at` never decreases along the log, so "as known at
K" is "as of position P" for every later page however far the index has moved: commands
recorded after P are later than K, and accounts first recorded after K are skipped. The
one case a time cannot tell apart, a command after P recorded at exactly K (a command
file may give the same `recorded_at` twice), is found by reading the record after P and
refused (the cursor names it), never answered wrongly.

The cursor is opaque and verified: its fields and an HMAC whose key is the fingerprint of
the log's event at P (so a cursor of another store, or of a log rewritten since, fails),
over the question it was made for (another capability, region, plan or time fails). It
grants nothing: anyone who may page may ask the same question afresh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from entitlements.application.store_app import EntitlementsApplication
from entitlements.domain.decisions import PositionNotReached
from entitlements.domain.rules import PLANS, AccountState, RegionState, UnknownCapability, decide
from entitlements.domain.times import parse_when
from projections.check_index import from_us, to_us
from projections.projector import Projector
from projections.snapshot import fingerprint
from projections.who_can import Question, Row, page

MAX_LIMIT = 10_000
MAX_CURSOR = 2048  # characters: longer is never ours
WAIT = 2.0  # seconds a later page waits for an index behind the cursor's position


@dataclass(frozen=True, slots=True)
class Asked:
    """The question as given (what a cursor must have been made for)."""

    capability: str
    region: str
    plan: str | None = None
    at: str | None = None
    as_known_at: str | None = None
    denied: bool = False

    def key(self) -> list[Any]:
        return [self.capability, self.region, self.plan, self.at, self.as_known_at, self.denied]


@dataclass(frozen=True, slots=True)
class WhoCanPage:
    """One page: the accounts, the cursor of the next page (None: the last) and P."""

    rows: list[Row]
    next_cursor: str | None
    position: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "accounts": [r.as_dict() for r in self.rows],
            "next_cursor": self.next_cursor,
            "position": self.position,
        }


@dataclass(frozen=True, slots=True)
class Pin:
    """What a cursor carries: the position, the pinned (T, K) in us, the last id listed."""

    position: int
    t: int
    k: int
    after: str | None


def validate(asked: Asked, limit: int) -> tuple[datetime | None, datetime | None]:
    """Refuse a bad limit, capability or time, each named; the parsed times."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: must be between 1 and {MAX_LIMIT}, not {limit}")
    try:
        decide(asked.capability, AccountState(), RegionState(asked.region))
    except UnknownCapability as e:
        raise ValueError(f"capability: {e}") from None
    if not asked.region or len(asked.region) > 64:
        raise ValueError(f"region: {asked.region[:40]!r} is not a region")
    if asked.plan is not None and asked.plan not in PLANS:
        raise ValueError(f"plan: {asked.plan[:40]!r} is not one of {', '.join(PLANS)}")
    return parse_when("at", asked.at), parse_when("as_known_at", asked.as_known_at)


class WhoCan:
    """Pages of who-can from the projector's index; reads the store only for the event at
    the pinned position (the cursor's key) and, on a later page, the one after it."""

    def __init__(self, app: EntitlementsApplication, projector: Projector) -> None:
        self.app, self.projector = app, projector

    def page(self, asked: Asked, limit: int = 100, cursor: str | None = None) -> WhoCanPage:
        at, known = validate(asked, limit)
        pin = self._first(at, known) if cursor is None else self._verified(cursor, asked)
        q = Question(asked.capability, asked.region, asked.plan, pin.t, pin.k, asked.denied)
        with self.projector.lock:
            reached = self.projector.index.position  # what the page is answered from
            try:
                rows, more = page(self.projector.index, q, pin.after, limit)
            except LookupError:
                if asked.region not in self.projector.index.regions:
                    raise ValueError(
                        f"region: no account or rule recorded in {asked.region[:40]!r}"
                    ) from None
                rows, more = [], False
        if cursor is not None and reached > pin.position:
            self._no_tie(pin)  # after the page: the index may have moved until it was made
        next_cursor = None
        if more and rows:
            last = Pin(pin.position, pin.t, pin.k, rows[-1].account_id)
            next_cursor = self._sign(last, asked)
        return WhoCanPage(rows, next_cursor, pin.position)

    def _first(self, at: datetime | None, known: datetime | None) -> Pin:
        """Pin the index's position now, and (T, K) with it."""
        with self.projector.lock:
            position = self.projector.index.position
            newest = self.projector.log.newest_recorded_at
        t = to_us(at) if at is not None else to_us(datetime.now(UTC))
        k = to_us(newest) if newest is not None else 0
        if known is not None:
            k = min(k, to_us(known))
        return Pin(position, t, k, None)

    # -- the cursor ----------------------------------------------------------------------

    def _key(self, position: int) -> bytes:
        """The MAC key: the fingerprint of the log's event at `position` (ValueError when
        the log has none there)."""
        if position == 0:
            return b"who-can\x00empty"
        (n,) = self.app.recorder.select_notifications(start=position, limit=1)
        if n.id != position:
            raise ValueError(position)
        return json.dumps(fingerprint(n), sort_keys=True).encode()

    def _sign(self, pin: Pin, asked: Asked, key: bytes | None = None) -> str:
        body = json.dumps(
            [1, pin.position, pin.t, pin.k, pin.after, asked.key()], separators=(",", ":")
        ).encode()
        key = self._key(pin.position) if key is None else key
        mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
        return _b64(body) + "." + _b64(mac)

    def _verified(self, cursor: str, asked: Asked) -> Pin:
        """The cursor's pin, once its MAC and question are checked and the index has
        reached its position."""
        pin, question = _parsed(cursor)
        try:
            key = self._key(pin.position)
        except ValueError:
            raise ValueError("cursor: not made by this store") from None
        if not hmac.compare_digest(self._sign(pin, Asked(*question), key), cursor):
            raise ValueError("cursor: not made by this store, or altered")
        if question != asked.key():
            raise ValueError("cursor: made for another question (capability, region, plan, times)")
        if not self.projector.wait_for(pin.position, WAIT):
            raise PositionNotReached(pin.position, self.projector.index.position, WAIT)
        return pin

    def _no_tie(self, pin: Pin) -> None:
        """Refuse when the record after P was recorded at K itself (see the module's doc):
        `recorded_at` never decreases, so that record is the only one to read."""
        found = self.app.recorder.select_notifications(start=pin.position + 1, limit=1)
        event: Any = self.app.mapper.to_domain_event(found[0]) if found else None
        recorded = getattr(event, "recorded_at", None)
        if recorded is not None and to_us(recorded) <= pin.k:
            raise ValueError(
                "cursor: a command recorded after it has the very recorded_at it pins; "
                "start again without a cursor"
            )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parsed(cursor: str) -> tuple[Pin, list[Any]]:
    """The cursor's fields, unverified (ValueError naming `cursor` for anything else)."""
    bad = ValueError("cursor: not a who-can cursor")
    if len(cursor) > MAX_CURSOR or cursor.count(".") != 1:
        raise bad
    body = cursor.split(".")[0]
    try:
        fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        version, position, t, k, after, question = fields
    except (ValueError, TypeError, binascii.Error):
        raise bad from None
    ints = all(type(x) is int for x in (version, position, t, k))
    if version != 1 or not ints or position < 0 or not isinstance(question, list):
        raise bad
    if after is not None and not isinstance(after, str) or len(question) != 6:
        raise bad
    try:
        from_us(t), from_us(k)
    except OverflowError:
        raise bad from None
    return Pin(position, t, k, after), question
