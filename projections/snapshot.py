"""The index snapshot: the check index itself, in bulk, so a process starts without reading
the whole log and without building a Fact per account (about 1 s a million accounts).

What it holds: the templates, shapes and stand-in facts as JSON tables (few, shared by all
accounts); per account its id (a JSON list), its template id and its times as base64 arrays
(read with `array.frombytes`, no per-account parsing); the regions' facts; the accounts of
each region in registration order, as indices. It carries no code (no pickle: loading it
can only ever build data, each field checked), names the schema of the code that wrote it,
and names the event at its position (id, version, topic and a hash of the stored bytes),
which the loader checks against the log. A file that fails any check, or that is not what
it claims, is ignored: the process reads the log instead.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import sys
from array import array
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from entitlements.rules import AccountState, Fact
from projections.check_index import (
    FACT_FIELDS,
    MASK,
    SHIFT,
    STATE_FIELDS,
    CheckIndex,
    Interner,
    Store,
    Template,
    code_of,
)


class SnapshotRefused(ValueError):
    """The file is not a snapshot this code can trust; the caller reads the log instead."""


def fingerprint(notification: Any) -> dict[str, Any]:
    """What identifies the event at a position: a snapshot is of this log only if the event
    at its position is this very event, byte for byte."""
    return {
        "id": str(notification.originator_id),
        "version": notification.originator_version,
        "topic": notification.topic,
        "sha256": hashlib.sha256(bytes(notification.state)).hexdigest(),
    }


def _fact_row(f: Fact) -> list[Any]:
    return [
        f.stream,
        f.type,
        f.version,
        f.effective_at.isoformat(),
        f.recorded_at.isoformat(),
        f.data,
        f.cause,
    ]


def _fact(row: list[Any]) -> Fact:
    stream, type_, version, effective_at, recorded_at, data, cause = row
    if not (
        isinstance(stream, str)
        and isinstance(type_, str)
        and type(version) is int
        and isinstance(data, dict)
        and (cause is None or isinstance(cause, dict))
    ):
        raise TypeError("a fact of the wrong shape")
    effective, recorded = datetime.fromisoformat(effective_at), datetime.fromisoformat(recorded_at)
    if effective.tzinfo is None or recorded.tzinfo is None:
        raise TypeError("a time without an offset")
    return Fact(stream, type_, version, effective, recorded, data, cause)


FORMAT = "entitlements-index-snapshot"
SCHEMA = 5  # raise whenever the index's layout changes: an older file is then ignored


@dataclass
class Loaded:
    """A verified-shape index snapshot: what a checking process starts from."""

    position: int
    newest_recorded_at: datetime | None
    regions: dict[str, list[Fact]]
    members: dict[str, list[str]]  # region -> its accounts, in registration order
    accounts: dict[str, int]  # account -> its code in `store`
    store: Store


def write_index(
    path: Path,
    index: CheckIndex,
    log: Any,
    members: dict[str, list[str]],
    head: dict[str, Any] | None,
    tmp_suffix: str,
) -> None:
    """Write the check index (every account encoded) and the regions' facts, atomically.
    `log` gives position, newest_recorded_at and regions (LogFacts or LightLog)."""
    index.encode_all()
    interner, store = index.interner, index.store
    ids = list(index.accounts)
    where = {a: i for i, a in enumerate(ids)}
    templates = interner.templates
    times, tids = array("q"), array("I")
    for a in ids:
        code = code_of(index.accounts[a])
        assert code is not None  # encode_all: every account has its code
        tid, offset = code & MASK, code >> SHIFT
        tids.append(tid)
        times.extend(store.times[offset : offset + templates[tid].slots])
    document = {
        "format": FORMAT,
        "schema": SCHEMA,
        "byteorder": sys.byteorder,
        "position": log.position,
        "head": head,
        "newest_recorded_at": log.newest_recorded_at and log.newest_recorded_at.isoformat(),
        "regions": {r: [_fact_row(f) for f in fs] for r, fs in log.regions.items()},
        **_interned(interner),
        "accounts": ids,
        "template_of": _b64(tids),
        "times": _b64(times),
        "who": {a: list(w) for a, w in store.who.items() if a in where},
        "members": {r: _b64(array("I", [where[a] for a in accts])) for r, accts in members.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(tmp_suffix)
    # json.dumps, not json.dump: dump streams through the pure-Python encoder (iterencode),
    # dumps encodes in C in one go (measured: most of a rebuild's snapshot time at 200k).
    encoded = json.dumps(document, separators=(",", ":")).encode()
    with gzip.open(tmp, "wb", compresslevel=1) as f:
        f.write(encoded)
    tmp.replace(path)


def read_index(path: Path) -> tuple[Loaded, dict[str, Any] | None]:
    """The index in the file and the fingerprint of its head event; SnapshotRefused when the
    file is not a well-formed index snapshot of this schema (nothing in it can run: JSON
    and base64 numbers, each checked before use)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            document = json.load(f)
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("schema") != SCHEMA
        ):
            raise SnapshotRefused(f"not a schema-{SCHEMA} index snapshot")
        if document["byteorder"] != sys.byteorder:
            raise SnapshotRefused("written on a machine of the other byte order")
        return _loaded(document), document["head"]
    except SnapshotRefused:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        RecursionError,
        OverflowError,
        binascii.Error,
    ) as e:
        raise SnapshotRefused(f"unreadable snapshot: {type(e).__name__}") from None


def _b64(a: array[int]) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def _unb64(typecode: str, text: Any) -> array[int]:
    if not isinstance(text, str):
        raise TypeError("not base64 text")
    a = array(typecode)
    a.frombytes(base64.b64decode(text, validate=True))
    return a


def _interned(interner: Interner) -> dict[str, Any]:
    """Templates and their parts as JSON rows; every reference is an index into a table."""
    values: list[Any] = []
    value_ids: dict[int, int] = {}
    standins: list[list[Any]] = []
    standin_ids: dict[int, int] = {}
    shapes: list[list[Any]] = []
    shape_ids: dict[int, int] = {}

    def value(v: Any) -> int:
        if v is None:
            return -1
        if id(v) not in value_ids:
            value_ids[id(v)] = len(values)
            values.append(v)
        return value_ids[id(v)]

    def standin(f: Fact | None) -> int | None:
        if f is None:
            return None
        if id(f) not in standin_ids:
            standin_ids[id(f)] = len(standins)
            standins.append([f.version, f.type, value(f.data), value(f.cause)])
        return standin_ids[id(f)]

    def shape(s: AccountState) -> int:
        if id(s) not in shape_ids:
            shape_ids[id(s)] = len(shapes)
            shapes.append(
                [
                    standin(getattr(s, n)) if n in FACT_FIELDS else getattr(s, n)
                    for n in STATE_FIELDS
                ]
            )
        return shape_ids[id(s)]

    templates = [
        [
            t.region,
            t.klo,
            t.m,
            [[lo, hi, [shape(s) for s in states]] for lo, hi, states in t.beliefs],
            [[ty, v, e, r, value(d), value(c)] for ty, v, e, r, d, c in t.events],
            t.slots,
            t.first_registration,
        ]
        for t in interner.templates
    ]
    return {
        "values": values,
        "standins": standins,
        "shapes": shapes,
        "templates": templates,
        "signatures": [[tid, list(ranks)] for tid, ranks in interner.signatures()],
    }


def _int(v: Any, low: int, high: int) -> int:
    """An int in [low, high), or TypeError."""
    if type(v) is not int or not low <= v < high:
        raise TypeError("an index out of range")
    return v


def _str(v: Any, none: bool = False) -> Any:
    if not (isinstance(v, str) or (none and v is None)):
        raise TypeError("not a string")
    return v


def _loaded(d: dict[str, Any]) -> Loaded:
    interner = Interner()
    values = d["values"]
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise TypeError("values")
    values = [interner.value(v) for v in values]

    def value(i: Any, none: bool = True) -> Any:
        return None if none and i == -1 else values[_int(i, 0, len(values))]

    standins = [
        interner.standin(_int(i, 0, 1 << 20), _str(ty), value(dv, none=False), value(cv))
        for i, ty, dv, cv in d["standins"]
    ]
    shapes = []
    for row in d["shapes"]:
        if not isinstance(row, list) or len(row) != len(STATE_FIELDS):
            raise TypeError("a shape")
        fields_: dict[str, Any] = {
            n: (None if v is None else standins[_int(v, 0, len(standins))])
            if n in FACT_FIELDS
            else _str(v, none=n == "partner")
            for n, v in zip(STATE_FIELDS, row, strict=True)
        }
        shapes.append(interner.shape(AccountState(**fields_)))
    ids = []
    for region, klo, m, beliefs, events, slots, first in d["templates"]:
        _int(slots, 0, 1 << 16)
        _int(klo, 0, slots + 1)
        _int(m, 0, slots - klo + 1)
        if not isinstance(beliefs, list) or len(beliefs) != m:
            raise TypeError("beliefs")
        rows = []
        for lo, hi, states in beliefs:
            _int(lo, 0, slots + 1)
            _int(hi, lo, slots + 1)
            if not isinstance(states, list) or len(states) != hi - lo:
                raise TypeError("states")
            rows.append((lo, hi, tuple(shapes[_int(s, 0, len(shapes))] for s in states)))
        evs = tuple(
            (
                _str(ty),
                _int(v, 1, 1 << 62),
                _int(e, 0, slots),
                _int(r, 0, slots),
                value(dv, False),
                value(cv),
            )
            for ty, v, e, r, dv, cv in events
        )
        if first is not None:
            _int(first, 0, len(evs))
        template = Template(_str(region), klo, m, tuple(rows), evs, slots, first)
        ids.append(interner.template(template))
    for tid, ranks in d["signatures"]:
        t = interner.templates[ids[_int(tid, 0, len(ids))]]
        if not isinstance(ranks, list) or len(ranks) != t.slots:
            raise TypeError("ranks")
        interner.remember(ids[tid], tuple(_int(r, 0, 1 << 16) for r in ranks))
    store = Store(interner)
    store.times = _unb64("q", d["times"])
    tids = _unb64("I", d["template_of"])
    accounts = d["accounts"]
    if not isinstance(accounts, list) or len(tids) != len(accounts):
        raise TypeError("accounts")
    slots_of = [interner.templates[i].slots for i in ids]
    codes = []
    offset = 0
    for tid in tids:
        codes.append(offset << SHIFT | ids[tid])
        offset += slots_of[tid]
    if offset != len(store.times):
        raise TypeError("times")
    index = dict(zip(accounts, codes, strict=True))
    if len(index) != len(accounts) or not all(isinstance(a, str) for a in index):
        raise TypeError("account ids")
    for a, who in d["who"].items():
        if a not in index or not isinstance(who, list):
            raise TypeError("who")
        store.who[a] = tuple(_str(c, none=True) for c in who)
    members = {}
    for region, where in d["members"].items():
        members[_str(region)] = [accounts[i] for i in _unb64("I", where)]
    regions = {_str(code): [_fact(r) for r in rows] for code, rows in d["regions"].items()}
    position = d["position"]
    if type(position) is not int or position < 0:
        raise TypeError("position")
    newest = d["newest_recorded_at"]
    return Loaded(
        position,
        datetime.fromisoformat(newest) if newest is not None else None,
        regions,
        members,
        index,
        store,
    )
