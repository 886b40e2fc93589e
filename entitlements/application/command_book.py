"""The writer's memory of the command log: which command ids are on file, at what position,
and which hosting fan-outs were recorded but not finished.

Only a writer needs it (a checking process never builds one), so it lives on the engine's
side, fed by the projector's read of the log (`Projector.on_records`). It is compact: per
command one 64-bit hash of its id and its position (about 100 bytes), not the command. A
hit is confirmed in the store, where the record itself says what the command was, so a
hash collision can never pass for a duplicate. It is kept in a file of its own beside the
index snapshot (JSON, no code), checked against the log and bound to the store like the
snapshot (its SHA-256 on record in the store: projections/snapshot_digests.py).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from eventsourcing.application import Application

from entitlements.domain.command_log import command_uuid, conflict_key, conflict_uuid
from entitlements.domain.events import COMMAND_APPLIED, COMMAND_REJECTED, FAN_OUT_COMPLETED
from projections.snapshot_digests import UNREADABLE, Hashed

FORMAT = "entitlements-command-book"
SCHEMA = 1


class CommandOutcome(NamedTuple):
    """What became of a command, kept under its command_id: a repeat gets this back."""

    command: str
    fingerprint: str
    status: str  # "applied" | "rejected"
    reason: str | None
    position: int  # the log position its result reported (after a fan-out: the fan-out's end)


def _key(command_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(command_id.encode(), digest_size=8).digest(), "big")


class CommandBook:
    """Command ids on file (hashed) with their positions; unfinished fan-outs."""

    def __init__(self) -> None:
        self.position = 0  # the log position the book reflects
        # hash of the command_id -> position its result reported (negative: rejected)
        self._positions: dict[int, int] = {}
        # command_id -> (region, actor) of a hosting fan-out not finished yet, and the
        # record's aggregate id (as an int) -> command_id, for its FanOutCompleted
        self.pending_fan_outs: dict[str, tuple[str, str | None]] = {}
        self._fan_out_ids: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._positions)

    def copy(self) -> CommandBook:
        """A book of its own with the same contents (a what-if's copy of the log)."""
        other = CommandBook()
        other.position = self.position
        other._positions = dict(self._positions)
        other.pending_fan_outs = dict(self.pending_fan_outs)
        other._fan_out_ids = dict(self._fan_out_ids)
        return other

    # -- taking the log in ---------------------------------------------------------------

    def take(self, records: Iterable[tuple[int, Any]], position: int) -> None:
        """Command records (CommandApplied, CommandRejected, FanOutCompleted) in log order,
        then the log position reached."""
        for at, event in records:
            kind = type(event).__name__
            if kind == FAN_OUT_COMPLETED:
                command_id = self._fan_out_ids.pop(event.originator_id.int, None)
                if command_id is not None:
                    self.pending_fan_outs.pop(command_id, None)
                    self._positions[_key(command_id)] = at
            elif kind == COMMAND_APPLIED:
                self._positions[_key(event.command_id)] = at
                if event.fan_out:
                    self.pending_fan_outs[event.command_id] = (event.region, event.actor)
                    self._fan_out_ids[event.originator_id.int] = event.command_id
            elif not event.conflict:  # a conflicting id stays with the command that used it first
                self._positions[_key(event.command_id)] = -at
            else:  # the attempt itself is on file: its repeat is a duplicate
                self._positions[_key(conflict_key(event.command_id, event.fingerprint))] = -at
        self.position = max(self.position, position)

    # -- questions -----------------------------------------------------------------------

    def outcome(self, app: Application[Any], command_id: str) -> CommandOutcome | None:
        """What became of the command with this id, if any: the hash says whether to look,
        the record in the store says what it was (a collision finds no record)."""
        position = self._positions.get(_key(command_id))
        if position is None:
            return None
        stored = app.recorder.select_events(command_uuid(command_id), lte=1)
        if not stored:
            return None
        record: Any = app.mapper.to_domain_event(stored[0])  # a CommandApplied or CommandRejected
        if record.command_id != command_id:  # pragma: no cover - a uuid5 collision
            return None
        rejected = type(record).__name__ == COMMAND_REJECTED
        return CommandOutcome(
            record.command,
            record.fingerprint,
            "rejected" if rejected else "applied",
            record.reason if rejected else None,
            abs(position),
        )

    def conflict_outcome(
        self, app: Application[Any], command_id: str, fingerprint: str
    ) -> CommandOutcome | None:
        """The recorded rejection of this very attempt to reuse `command_id` for another
        command (that fingerprint), if on file: the hash says whether to look, the store
        confirms."""
        position = self._positions.get(_key(conflict_key(command_id, fingerprint)))
        if position is None:
            return None
        stored = app.recorder.select_events(conflict_uuid(command_id, fingerprint), lte=1)
        if not stored:
            return None
        record: Any = app.mapper.to_domain_event(stored[0])
        return CommandOutcome(record.command, fingerprint, "rejected", record.reason, -position)

    def position_of(self, command_id: str) -> int | None:
        """The position the command's result reported, if its id is on file (a hash: only
        for a command known to be ours, e.g. a commit whose acknowledgement was lost)."""
        position = self._positions.get(_key(command_id))
        return None if position is None else abs(position)

    def has_record(self, app: Application[Any], event: Any) -> bool:
        """Whether the log holds this very command record (a commit whose acknowledgement
        was lost): the same command on file and, for a FanOutCompleted, the fan-out done."""
        if type(event).__name__ == FAN_OUT_COMPLETED:
            return event.originator_id.int not in self._fan_out_ids and any(
                True for _ in app.recorder.select_events(event.originator_id, gt=1, lte=2)
            )
        if getattr(event, "conflict", False):  # an id reused: its own record, by its own id
            return self.conflict_outcome(app, event.command_id, event.fingerprint) is not None
        known = self.outcome(app, event.command_id)
        return known is not None and known.fingerprint == event.fingerprint

    # -- the file ------------------------------------------------------------------------

    def save(
        self,
        path: Path,
        head: dict[str, Any] | None,
        tmp_suffix: str,
        bind: Callable[[int, str], None] | None = None,
    ) -> None:
        """Write the book to a new file and move it into place (atomic); `bind(position,
        digest)` is told the file's SHA-256 before it moves (the store records it)."""
        keys = array("Q", self._positions.keys())
        values = array("q", self._positions.values())
        document = {
            "format": FORMAT,
            "schema": SCHEMA,
            "position": self.position,
            "head": head,
            "keys": base64.b64encode(keys.tobytes()).decode(),
            "positions": base64.b64encode(values.tobytes()).decode(),
            "pending_fan_outs": [
                [uuid_int, command_id, *self.pending_fan_outs[command_id]]
                for uuid_int, command_id in self._fan_out_ids.items()
            ],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(tmp_suffix)
        with open(tmp, "wb") as raw:
            hashed = Hashed(raw)
            with gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=1) as f:
                f.write(json.dumps(document, separators=(",", ":")).encode())
        try:
            if bind is not None:
                bind(self.position, hashed.hexdigest())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> tuple[CommandBook, dict[str, Any] | None, str] | None:
        """The book in the file, the fingerprint of its head event and the file's SHA-256,
        or None when the file is missing or not a book of this schema (checking it against
        the log and the store's record is the caller's)."""
        try:
            with open(path, "rb") as raw:
                hashed = Hashed(raw)
                with gzip.GzipFile(fileobj=hashed, mode="rb") as f:
                    document = json.load(io.TextIOWrapper(f, encoding="utf-8"))
                hashed.drain()
            if document.get("format") != FORMAT or document.get("schema") != SCHEMA:
                return None
            book = cls()
            position = document["position"]
            if type(position) is not int or position < 0:
                return None
            keys = array("Q", base64.b64decode(document["keys"], validate=True))
            values = array("q", base64.b64decode(document["positions"], validate=True))
            if len(keys) != len(values):
                return None
            book.position = position
            book._positions = dict(zip(keys, values, strict=True))
            for uuid_int, command_id, region, actor in document["pending_fan_outs"]:
                if not (type(uuid_int) is int and isinstance(command_id, str)):
                    return None
                if not (isinstance(region, str) and (actor is None or isinstance(actor, str))):
                    return None
                book._fan_out_ids[uuid_int] = command_id
                book.pending_fan_outs[command_id] = (region, actor)
            return book, document["head"], hashed.hexdigest()
        except UNREADABLE:
            return None
