"""The log's integrity: a SHA-256 chain over every record, in log order.

Each stored event (account and region events, and the command records CommandApplied,
CommandRejected, FanOutCompleted) carries `chain = {"prev": P, "hash": H}` in its own
stored state, where

    content = JSON, keys sorted, no spaces, UTF-8, of
              {"stream": originator id, "version": originator version, "topic": topic,
               "state": the stored state without `chain` and the library's `timestamp`}
              (times as ISO 8601, UUIDs as strings)
    H       = sha256(P + "\\n" + content), in hex; P is the previous record's H

The writer seals events just before it saves them, under the writer lock, in the order they
take in the log. Records from before the chain existed carry none: they may only come
first, and the first chained record's P is `genesis(position of the record before it)`
(0 for a log that starts chained). `verify` walks the log recomputing every link; a head
hash written down earlier (a receipt, HASH@POSITION) proves the log up to that position
unchanged, which also catches a chain recomputed from scratch after an edit. The walk
itself (reading the log in pages) is the application's: entitlements/application/integrity_check.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

CHAIN = "chain"
LOOKAHEAD = 2000  # rows read past a break to tell a deletion from an insertion or a move
SEEN = 50_000  # recent hashes remembered to recognise a row that links back (a move)
_SKIP = frozenset({CHAIN, "timestamp", "originator_id", "originator_version"})


def genesis(position: int) -> str:
    """The previous hash of the first chained record: derived from the position of the
    record before it (0: none), so removing that record breaks the first link too."""
    return hashlib.sha256(f"entitlements-log-genesis:{position}".encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise TypeError(f"not part of a record's content: {type(value).__name__}")


_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
).encode


def content(stream: UUID | str, version: int, topic: str, state: dict[str, Any]) -> bytes:
    """A record's canonical bytes (see the module's docstring)."""
    kept = {k: v for k, v in state.items() if k not in _SKIP}
    return _encode(
        {"stream": str(stream), "version": version, "topic": topic, "state": kept}
    ).encode()


def link(prev: str, body: bytes) -> str:
    """chain_i = sha256(chain_{i-1} + "\\n" + content_i), hex."""
    h = hashlib.sha256(prev.encode())
    h.update(b"\n")
    h.update(body)
    return h.hexdigest()


def seal(events: Iterable[Any], prev: str) -> str:
    """Set each event's `chain` (in the order given: the order they take in the log) and
    return the last hash. The state hashed is what the mapper will store."""
    for e in events:
        state = vars(e)  # not copied: content() skips what is not stored or not hashed
        version = getattr(type(e), "class_version", 1)
        if version > 1:
            state = {**state, "class_version": version}
        h = link(prev, content(e.originator_id, e.originator_version, get_topic(type(e)), state))
        object.__setattr__(e, CHAIN, {"prev": prev, "hash": h})
        prev = h
    return prev


def _state(app: Application[Any], n: Any) -> dict[str, Any]:
    """A stored event's state as stored (no upcasting: the hash covers what was written)."""
    return read_state(app.mapper, n.state)


def read_state(mapper: Any, raw: Any) -> dict[str, Any]:
    """A stored state decoded by `mapper`'s cipher, compressor and transcoder. ValueError
    saying why when it is not one: a row rewritten behind the engine's back (text for bytes,
    NULL, bytes that are not a record) is a finding, never a crash."""
    if isinstance(raw, memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        what = "missing (NULL)" if raw is None else f"{type(raw).__name__}, not bytes"
        raise ValueError(f"its state is {what}")
    try:
        if mapper.cipher:
            raw = mapper.cipher.decrypt(raw)
        if mapper.compressor:
            raw = mapper.compressor.decompress(raw)
        state: Any = mapper.transcoder.decode(raw)
    except Exception as e:  # noqa: BLE001 - any bytes may be there: each decoder fails its way
        raise ValueError(f"its state does not decode ({one_line(e)})") from None
    if not isinstance(state, dict):
        raise ValueError(f"its state is a {type(state).__name__}, not an object")
    return state


def one_line(e: BaseException) -> str:
    """An exception's message as one short line (its type when it has none)."""
    lines = str(e).strip().splitlines()
    text = lines[0].strip() if lines else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def stored_hash(app: Application[Any], position: int) -> str | None:
    """The chain hash the record at `position` carries, as stored (not verified); None when
    there is no such record or it carries none (a record from before the chain)."""
    if position <= 0:
        return None
    found = app.recorder.select_notifications(start=position, limit=1)
    if not found or found[0].id != position:
        return None
    try:
        chain = _state(app, found[0]).get(CHAIN)
    except ValueError:  # a damaged row carries nothing to trust (`verify` says so)
        return None
    h = chain.get("hash") if isinstance(chain, dict) else None
    return h if isinstance(h, str) else None


def head_at(app: Application[Any], position: int) -> str:
    """What the next record links to, after the record at `position`: its stored hash, or
    genesis(position) when it has none (a record from before the chain, or an empty log)."""
    return stored_hash(app, position) or genesis(position)


def parse_receipt(text: str) -> tuple[str, int]:
    """HASH@POSITION -> (hash, position); ValueError naming what is wrong."""
    h, sep, p = text.strip().rpartition("@")
    h = h.lower()
    if not sep or len(h) != 64 or any(ch not in "0123456789abcdef" for ch in h):
        raise ValueError("receipt: expected HASH@POSITION (64 hex digits, '@', a position)")
    if not p.isdigit() or int(p) < 1:
        raise ValueError("receipt: the position after '@' must be a positive integer")
    return h, int(p)


@dataclass
class Row:
    """One stored record, read for checking."""

    position: int
    prev: str | None  # None: it carries no chain
    hash: str | None
    computed: str | None = None  # sha256(its own prev + its content): is it self-consistent?
    damage: str | None = None  # why it cannot be read as a record at all (then no chain)


@dataclass
class Verification:
    """What `verify` found: the head, or the first break and how; and the receipt."""

    ok: bool
    position: int  # the head's position (ok), else where the chain breaks
    hash: str | None  # the head's hash (ok; None when nothing is chained yet)
    chained: int = 0  # records checked
    legacy: int = 0  # records from before the chain (not covered)
    starts_at: int | None = None  # the first chained record's position
    kind: str | None = None  # edited | deleted | inserted | reordered | receipt
    reason: str | None = None  # one line
    receipt: dict[str, Any] | None = None
    head: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "head": self.head,
            "chained": self.chained,
            "legacy": self.legacy,
            "chain_starts_at": self.starts_at,
        }
        if not self.ok and self.kind != "receipt":
            out["break"] = {"position": self.position, "kind": self.kind, "reason": self.reason}
        if self.receipt is not None:
            out["receipt"] = self.receipt
        return out


@dataclass(frozen=True)
class Unreadable:
    """A row the store's library cannot even list (say, an originator id that is not a
    UUID): only its position and why."""

    id: int
    why: str


def row_of(app: Application[Any], n: Any) -> Row:
    """A row as the chain sees it; a row that is not a record is a Row with its damage."""
    if isinstance(n, Unreadable):
        return Row(n.id, None, None, damage=n.why)
    try:
        state = _state(app, n)
        chain = state.get(CHAIN)
        if not (isinstance(chain, dict) and isinstance(chain.get("prev"), str)):
            return Row(n.id, None, None)
        prev, h = chain["prev"], chain.get("hash")
        body = content(n.originator_id, n.originator_version, n.topic, state)
    except (ValueError, TypeError) as e:  # TypeError: a value JSON cannot hold (bytes, ...)
        return Row(n.id, None, None, damage=f"cannot be read as a record: {one_line(e)}")
    return Row(n.id, prev, h if isinstance(h, str) else None, link(prev, body))


@dataclass
class ChainWalk:
    """`verify`'s state along the log: the last good link, the recent hashes (to tell
    where a stray link points back to), the counts, and what is known of the receipt."""

    receipt: tuple[str, int] | None
    prev: str = field(default_factory=lambda: genesis(0))
    prev_pos: int = 0
    seen: OrderedDict[str, int] = field(default_factory=OrderedDict)  # recent hashes -> pos
    chained: int = 0
    legacy: int = 0
    starts_at: int | None = None
    receipt_holds: bool | None = None
    receipt_note: str = ""

    def passed(self, position: int) -> None:
        """A row past the receipt's position before it was met: the receipt has none."""
        receipt = self.receipt
        if receipt is not None and self.receipt_holds is None and position > receipt[1]:
            self.receipt_holds = False
            self.receipt_note = f"the log has no record at position {receipt[1]}"

    def step(self, row: Row) -> bool:
        """Take one row: a record from before the chain, or the next link; False at the
        first row that breaks the chain."""
        if row.prev is None and row.damage is None and self.starts_at is None:
            self.legacy += 1
            self.prev, self.prev_pos = genesis(row.position), row.position
            return True
        if self.starts_at is None:
            self.starts_at = row.position
        if row.prev != self.prev or row.hash != row.computed:
            return False
        self.chained += 1
        self.prev, self.prev_pos = row.computed or self.prev, row.position
        self.seen[self.prev] = row.position
        if len(self.seen) > SEEN:
            self.seen.popitem(last=False)
        self._at_receipt(row.position)
        return True

    def _at_receipt(self, position: int) -> None:
        """At the receipt's position the chain must be the receipt's hash."""
        if self.receipt is None or position != self.receipt[1]:
            return
        self.receipt_holds = self.prev == self.receipt[0]
        if not self.receipt_holds:
            self.receipt_note = (
                f"the chain at position {position} is {self.prev}, not the receipt's: the log "
                f"up to {position} was rewritten since the receipt was written"
            )

    def head_hash(self) -> str | None:
        return self.prev if self.starts_at is not None else None

    def broken(self, row: Row, ahead: list[Row]) -> Verification:
        """The first break, told from the rows around it."""
        kind, at, reason = _diagnose(row, ahead, self.prev, self.prev_pos, self.seen)
        out = Verification(False, at, None, self.chained, self.legacy, self.starts_at, kind, reason)
        out.head = {"position": self.prev_pos, "hash": self.head_hash()}
        return _with_receipt(out, self.receipt, self.receipt_holds, self.receipt_note)

    def end(self) -> Verification:
        """The whole log chained: the head, and the receipt's verdict."""
        receipt = self.receipt
        if receipt is not None and self.receipt_holds is None:
            self.receipt_holds = False
            self.receipt_note = (
                f"the log ends at position {self.prev_pos}, before the receipt's {receipt[1]}"
            )
        head_hash = self.head_hash()
        out = Verification(
            True, self.prev_pos, head_hash, self.chained, self.legacy, self.starts_at
        )
        out.head = {"position": self.prev_pos, "hash": head_hash}
        if receipt is not None and not self.receipt_holds:
            out.ok, out.kind = False, "receipt"
            out.reason = f"receipt does not hold: {self.receipt_note}"
            out.position = receipt[1]
        return _with_receipt(out, receipt, self.receipt_holds, self.receipt_note)


def _with_receipt(
    out: Verification, receipt: tuple[str, int] | None, holds: bool | None, note: str
) -> Verification:
    if receipt is not None:
        out.receipt = {
            "hash": receipt[0],
            "position": receipt[1],
            "holds": holds,
            **({"reason": note} if note and holds is False else {}),
        }
    return out


def _diagnose(
    row: Row, ahead: list[Row], prev: str, prev_pos: int, seen: OrderedDict[str, int]
) -> tuple[str, int, str]:
    """How the chain breaks at `row` (prev, prev_pos: the last good link), told from the
    links around it: (kind, position, one-line reason)."""
    p = row.position
    if row.damage is not None:  # not a record at all: whatever was there, this row changed
        return "edited", p, f"position {p} {row.damage}"
    nxt = next((r for r in ahead if r.prev is not None), None)
    over_p = nxt is not None and nxt.prev == prev  # the chain goes on as if p were not there
    if row.prev is None:
        return _unchained(p, nxt is None or over_p, prev_pos)
    if row.prev == prev:  # the link holds: the content (or the hash) was changed
        return _content_changed(p, over_p, prev_pos)
    return _misplaced(row, ahead, prev, prev_pos, seen, over_p)


def _unchained(p: int, foreign: bool, prev_pos: int) -> tuple[str, int, str]:
    """A row without a chain after chained rows: inserted when the chain goes on over it
    (or nothing chained follows), else a record whose chain was removed."""
    if foreign:
        why = f"a record without a chain after chained records (the last link is {prev_pos})"
        return "inserted", p, f"position {p} is not in the chain: {why}"
    return "edited", p, f"position {p} carries no chain after chained records (removed)"


def _content_changed(p: int, over_p: bool, prev_pos: int) -> tuple[str, int, str]:
    """The row links to the last good one but its hash fails: inserted when the next row
    links over it, else its content was changed."""
    if over_p:
        return "inserted", p, f"position {p} is not in the chain (the next links to {prev_pos})"
    why = "its content was changed after it was recorded"
    return "edited", p, f"position {p} does not match its hash: {why}"


def _misplaced(
    row: Row,
    ahead: list[Row],
    prev: str,
    prev_pos: int,
    seen: OrderedDict[str, int],
    over_p: bool,
) -> tuple[str, int, str]:
    """The row links elsewhere than the last good link: forward (reordered), over it
    (inserted), back past good rows, or to a record that is not there."""
    p = row.position
    later = next((r for r in ahead if r.hash is not None and r.hash == row.prev), None)
    if later is not None:  # it links to a record further on: rows changed places
        why = f"holds a record that belongs after position {later.position}"
        return "reordered", p, f"position {p} {why} (rows were moved or swapped)"
    if over_p:
        return "inserted", p, f"position {p} is not in the chain (the next links to {prev_pos})"
    back = seen.get(row.prev) if row.prev is not None else None
    if back is not None:
        return _links_back(row, ahead, prev_pos, seen, back)
    return _links_nowhere(row, ahead, prev, prev_pos)


def _links_back(
    row: Row, ahead: list[Row], prev_pos: int, seen: OrderedDict[str, int], back: int
) -> tuple[str, int, str]:
    """The row links back to the good record at `back`: either it is foreign (a copy, or a
    short tail added after the head) or the rows between are."""
    p = row.position
    if _foreign_tail(row, ahead, seen, prev_pos - back):
        return "inserted", p, _tail_reason(row, ahead, seen, back)
    first = next((q for q in seen.values() if q > back), p)
    span = f"position {first} is" if first == prev_pos else f"positions {first}..{prev_pos} are"
    return "inserted", first, f"{span} not in the chain: position {p} links to {back}"


def _links_nowhere(row: Row, ahead: list[Row], prev: str, prev_pos: int) -> tuple[str, int, str]:
    """The row links to no record on file: rows before a later link were inserted, a
    record was deleted (the row is self-consistent), or the row was edited."""
    p = row.position
    over = next((r for r in ahead if r.prev == prev), None)
    if over is not None:
        span = f"positions {p}..{over.position - 1}"
        return "inserted", p, f"{span} are not in the chain ({over.position} links to {prev_pos})"
    if row.hash is not None and row.hash == row.computed:
        why = f"a record between positions {prev_pos} and {p} was deleted"
        return "deleted", p, f"position {p} links to a record no longer in the log: {why}"
    return "edited", p, f"position {p} matches neither its hash nor its link"


def _run_from(row: Row, ahead: list[Row]) -> list[Row]:
    """`row` and the rows after it that chain on from it, each self-consistent."""
    run = [row]
    for r in ahead:
        if r.prev != run[-1].hash or r.hash != r.computed:
            break
        run.append(r)
    return run


def _foreign_tail(row: Row, ahead: list[Row], seen: OrderedDict[str, int], span: int) -> bool:
    """Is `row` (which links back past `span` good rows) the foreign one rather than those
    rows? Yes when it carries the chain of a record already in it (a copy), or when it starts a
    self-consistent run of rows that ends the log and is shorter than the span: the fewer
    rows blamed, the likelier the story (a copy of row 16 appended at 57 is not 16..56)."""
    if row.hash is not None and row.hash in seen:
        return True
    run = _run_from(row, ahead)
    return len(ahead) < LOOKAHEAD and len(run) == len(ahead) + 1 and len(run) < span


def _tail_reason(row: Row, ahead: list[Row], seen: OrderedDict[str, int], back: int) -> str:
    p = row.position
    copy = seen.get(row.hash) if row.hash is not None else None
    if copy is not None:
        why = f"it carries the chain of the record at position {copy} (a copy)"
        return f"position {p} is not in the chain: {why}"
    last = _run_from(row, ahead)[-1].position
    span = f"position {p} is" if last == p else f"positions {p}..{last} are"
    return f"{span} not in the chain: added after the head, position {p} links to {back}"
