"""The index snapshot: the check index itself, in bulk, so a process starts without reading
the whole log and without building a Python object per account (but its id and its code).

What it holds: a header line of JSON (the data and cause dicts, stand-in facts and strings
the shared tables name; the regions' facts; the position and what the event there is),
then sections of raw bytes read in place into the structures a process keeps: the shapes
and templates as one array of numbers (snapshot_tables.py), the account ids (UTF-8, one a
line), each account's template id (`array('I')`), the accounts' times and record pointers
(`array('q')`, as `check_index.Store.times`), the sizes of the records' blocks and the
blocks (records.py), the accounts of each region in registration order (indices). No
section is parsed account by account in Python: ids are one split, codes one pass of
`accumulate`, so nothing per account but its id and its code is made, and no section is
held twice. It carries no code (no pickle: loading it can only ever build data, each
field and section checked: lengths, ranges, every record's start where a pointer says),
names the schema of the code that wrote it, and names the event at its position (id,
version, topic and a hash of the stored bytes), which the loader checks against the log. A
file that fails any check, or that is not what it claims, is ignored: the process reads
the log instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate, compress, repeat
from operator import lshift, or_, sub
from pathlib import Path
from typing import Any

from entitlements.domain.event_facts import fact_from_row, fact_row
from entitlements.domain.rules import Fact
from projections.check_index import (
    MASK,
    SHIFT,
    CheckIndex,
    Interner,
    Store,
    Template,
    code_of,
)
from projections.light_log import LightLog, Resolve
from projections.records import Records
from projections.snapshot_io import UNREADABLE, Hashed
from projections.snapshot_tables import read_tables, tables
from projections.timeline import region_timeline


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


FORMAT = "entitlements-index-snapshot"
SCHEMA = 7  # raise whenever the index's layout changes: an older file is then ignored
HEADER_MAX = 1 << 28  # bytes of the header line read at most


@dataclass
class Loaded:
    """A verified-shape index snapshot: what a checking process starts from."""

    position: int
    newest_recorded_at: datetime | None
    regions: dict[str, list[Fact]]
    members: dict[str, list[str]]  # region -> its accounts, in registration order
    accounts: dict[str, int]  # account -> its code in `store`
    store: Store
    digest: str = ""  # SHA-256 of the file's bytes (what the store has on record, if ours)

    def into(self, index: CheckIndex, resolve: Resolve) -> LightLog:
        """Put the snapshot's accounts and regions in `index`, at its position; the
        LightLog that goes with them (`resolve`: the stream of an aggregate id it names
        no stream for)."""
        regions = {c: region_timeline(c, fs) for c, fs in self.regions.items()}
        index.replace(self.accounts, regions, self.position, self.store)
        return LightLog(
            index, self.position, self.newest_recorded_at, self.regions, self.members, resolve
        )


def write_index(
    path: Path,
    index: CheckIndex,
    log: Any,
    members: dict[str, list[str]],
    head: dict[str, Any] | None,
    tmp_suffix: str,
    bind: Callable[[int, str], None] | None = None,
) -> str:
    """Write the check index (every account encoded) and the regions' facts, atomically;
    the file's SHA-256, computed as it is written. `log` gives position, newest_recorded_at
    and regions (LogFacts or LightLog). `bind(position, digest)` is called before the file
    is moved into place (the store records it: see snapshot_digests.py)."""
    sections, shared = _sections(index, members)
    header = {
        "format": FORMAT,
        "schema": SCHEMA,
        "byteorder": sys.byteorder,
        "position": log.position,
        "head": head,
        "newest_recorded_at": log.newest_recorded_at and log.newest_recorded_at.isoformat(),
        "regions": {r: [fact_row(f) for f in fs] for r, fs in log.regions.items()},
        **shared,
        "members": [[r, len(accounts)] for r, accounts in members.items()],
        "sections": [[name, len(data)] for name, data in sections.items()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(tmp_suffix)
    with open(tmp, "wb") as raw:
        hashed = Hashed(raw)
        with gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=1) as f:
            f.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
            for data in sections.values():
                f.write(data)
    digest = hashed.hexdigest()
    try:
        if bind is not None:
            bind(log.position, digest)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def _sections(
    index: CheckIndex, members: dict[str, list[str]]
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The file's sections (every account encoded first), in the order they are written,
    and the shared tables' part of the header."""
    index.encode_all()
    ids, template_of, times, who = _packed(index)
    blocks = array("I", map(len, who.blocks))
    if any("\n" in a for a in ids):
        raise ValueError("an account id with a line break cannot be written")
    where = {a: i for i, a in enumerate(ids)}
    ordinals = array("I", [where[a] for accounts in members.values() for a in accounts])
    # the templates some account has (not those of accounts encoded again), renumbered
    used = sorted(set(template_of))
    number = {tid: i for i, tid in enumerate(used)}
    template_of = array("I", map(number.__getitem__, template_of))
    shared, numbers = tables([index.interner.templates[tid] for tid in used])
    sections = {
        "tables": numbers.tobytes(),
        "ids": "\n".join(ids).encode(),
        "template_of": template_of.tobytes(),
        "times": times.tobytes(),
        "who_blocks": blocks.tobytes(),
        "who": b"".join(who.blocks),
        "members": ordinals.tobytes(),
    }
    return sections, shared


def _packed(index: CheckIndex) -> tuple[list[str], array[int], array[int], Records]:
    """Every account's id, template id, times and record, in the index's order (an
    account encoded again left its old times and record behind: not written)."""
    templates, store = index.interner.templates, index.store
    ids = list(index.accounts)
    template_of, times, who = array("I"), array("q"), Records()
    blocks: dict[int, bytes] = {}  # decompressed, as records are read
    for a in ids:
        code = code_of(index.accounts[a])
        assert code is not None  # encode_all: every account has its code
        tid, offset = code & MASK, code >> SHIFT
        template = templates[tid]
        template_of.append(tid)
        times.extend(store.times[offset : offset + template.slots])
        if template.who_keys:
            times.append(who.add(store.who.raw(store.times[offset + template.slots], blocks)))
    who.close()
    return ids, template_of, times, who


def read_index(path: Path) -> tuple[Loaded, dict[str, Any] | None]:
    """The index in the file (its `digest`: the file's SHA-256, computed as it is read) and
    the fingerprint of its head event; SnapshotRefused when the file is not a well-formed
    index snapshot of this schema (nothing in it can run: JSON and arrays of numbers, each
    checked before use). Whether the store has the digest on record is the caller's check."""
    try:
        with open(path, "rb") as raw:
            hashed = Hashed(raw)
            with gzip.GzipFile(fileobj=hashed, mode="rb") as f:
                header = _header(f)
                sections = _Sections(f, header["sections"])
                loaded = _loaded(header, sections)
                sections.end()
            hashed.drain()
        loaded.digest = hashed.hexdigest()
        return loaded, header["head"]
    except SnapshotRefused:
        raise
    except UNREADABLE as e:
        raise SnapshotRefused(f"unreadable snapshot: {type(e).__name__}") from None


def _header(f: Any) -> dict[str, Any]:
    """The first line: JSON of this format and schema, from a machine of our byte order."""
    document = json.loads(f.readline(HEADER_MAX))
    if (
        not isinstance(document, dict)
        or document.get("format") != FORMAT
        or document.get("schema") != SCHEMA
    ):
        raise SnapshotRefused(f"not a schema-{SCHEMA} index snapshot")
    if document["byteorder"] != sys.byteorder:
        raise SnapshotRefused("written on a machine of the other byte order")
    return document


class _Sections:
    """The file's sections, read one after another in the header's order, each exactly as
    long as the header says, and nothing after them; each read into what keeps it (no
    copy of a section is held while the next is read)."""

    def __init__(self, f: Any, lengths: Any) -> None:
        if not isinstance(lengths, list):
            raise TypeError("sections")
        self._f = f
        self._left = [(_str(name), _int(n, 0, 1 << 40)) for name, n in lengths]

    def _length(self, name: str) -> int:
        if not self._left or self._left[0][0] != name:
            raise TypeError(f"no section {name} here")
        return self._left.pop(0)[1]

    def bytes(self, name: str) -> bytes:
        n = self._length(name)
        data: bytes = self._f.read(n)
        if len(data) != n:
            raise ValueError("a section cut short")
        return data

    def into(self, name: str, typecode: str) -> Any:
        """The section as an array of `typecode` ("B": a bytearray), read in place."""
        n = self._length(name)
        kept: Any
        if typecode == "B":
            kept = bytearray(n)
        else:
            size = array(typecode).itemsize
            if n % size:
                raise ValueError("a section of part items")
            kept = array(typecode, [0]) * (n // size)
        with memoryview(kept) as whole, whole.cast("B") as view:
            got = 0
            while got < n:
                read = self._f.readinto(view[got:])
                if not read:
                    raise ValueError("a section cut short")
                got += read
        return kept

    def end(self) -> None:
        if self._left or self._f.read(1):
            raise ValueError("more after the last section, or fewer")


def _int(v: Any, low: int, high: int) -> int:
    """An int in [low, high), or TypeError."""
    if type(v) is not int or not low <= v < high:
        raise TypeError("an index out of range")
    return v


def _str(v: Any, none: bool = False) -> Any:
    if not (isinstance(v, str) or (none and v is None)):
        raise TypeError("not a string")
    return v


def _loaded(d: dict[str, Any], sections: _Sections) -> Loaded:
    interner = Interner()
    store = Store(interner)
    template_ids = read_tables(d, sections.into("tables", "q"), interner)
    ids, accounts = _accounts(sections, template_ids, store)
    members = _members(d["members"], sections.into("members", "I"), ids)
    regions = {_str(code): [fact_from_row(r) for r in rows] for code, rows in d["regions"].items()}
    position = d["position"]
    if type(position) is not int or position < 0:
        raise TypeError("position")
    newest = d["newest_recorded_at"]
    return Loaded(
        position,
        datetime.fromisoformat(newest) if newest is not None else None,
        regions,
        members,
        accounts,
        store,
    )


def _accounts(
    sections: _Sections, template_ids: list[int], store: Store
) -> tuple[list[str], dict[str, int]]:
    """Every account's id and code, the store's times and records adopted whole: each
    account takes its template's width of times, and its record's start is checked."""
    ids = sections.bytes("ids").decode("utf-8").split("\n")
    template_of: array[int] = sections.into("template_of", "I")
    n = len(template_of)
    if ids == [""] and n == 0:
        ids = []
    if len(ids) != n or "" in ids:
        raise TypeError("account ids")
    templates = [store.interner.templates[i] for i in template_ids]
    widths = [t.width for t in templates]
    store.times = times = sections.into("times", "q")
    if sum(map(widths.__getitem__, template_of)) != len(times):
        raise TypeError("times")
    store.who = _records(sections, template_of, templates, times)
    offsets = accumulate(map(widths.__getitem__, template_of), initial=0)
    codes = map(
        or_, map(lshift, offsets, repeat(SHIFT)), map(template_ids.__getitem__, template_of)
    )
    accounts = dict(zip(ids, codes, strict=True))
    if len(accounts) != n:
        raise TypeError("an account id twice")
    return ids, accounts


def _records(
    sections: _Sections, template_of: array[int], templates: list[Template], times: array[int]
) -> Records:
    """The records, each block checked (see Records.checked) against the pointers in the
    accounts' last slots, in account order."""
    lengths = sections.into("who_blocks", "I")
    whole = sections.bytes("who")
    if sum(lengths) != len(whole):
        raise ValueError("blocks")
    starts = accumulate(lengths, initial=0)
    blocks = [whole[a : a + n] for a, n in zip(starts, lengths, strict=False)]
    del whole
    has = [bool(t.who_keys) for t in templates]
    ends = accumulate(map([t.width for t in templates].__getitem__, template_of))
    where = compress(map(sub, ends, repeat(1)), map(has.__getitem__, template_of))  # last slots
    count = sum(map(has.__getitem__, template_of))
    return Records.checked(blocks, map(times.__getitem__, where), count)


def _members(counts: Any, ordinals: array[int], ids: list[str]) -> dict[str, list[str]]:
    """Each region's accounts, in registration order, from their indices."""
    accounts = list(map(ids.__getitem__, ordinals))
    members, at = {}, 0
    for region, count in counts:
        members[_str(region)] = accounts[at : at + _int(count, 0, len(accounts) - at + 1)]
        at += count
    if at != len(accounts):
        raise TypeError("members")
    return members
