"""The check index's shared tables as a snapshot holds them, and read back.

The tables are what accounts share: data and cause dicts (`values`), stand-in facts,
shapes (states made of stand-ins) and templates (check_index.Interner). A store built by
real commands has tens of thousands of templates (every mix of plans, reasons, partners and
time orders an account can have), so they are not JSON rows, which decode into a list and
an int object per number and leave the process's memory fragmented once freed: shapes and
templates are one `array('q')` of numbers, strings an index into a short list, walked once
by the loader, which makes only what it keeps. Dicts and stand-ins (a few hundred) stay
JSON. Every number is checked against what it indexes; nothing read can run.
"""

from __future__ import annotations

from array import array
from typing import Any

from entitlements.rules import AccountState, Fact
from projections.check_index import (
    FACT_FIELDS,
    OWN_HOLE,
    STATE_FIELDS,
    WHO_HOLES,
    Interner,
    Template,
)

_LIMIT = 1 << 62


class _Writer:
    """Numbers out, each table's entries named by their index, met in order."""

    def __init__(self) -> None:
        self.ints = array("q")
        self.values: list[Any] = []
        self.standins: list[list[Any]] = []
        self.strings: list[str] = []
        self._ids: dict[Any, int] = {}  # (table, id of the object) -> its index
        self._shapes: list[AccountState] = []

    def _index(self, table: list[Any], key: Any, row: Any) -> int:
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(table)
            table.append(row)
        return found

    def string(self, s: str | None) -> int:
        return -1 if s is None else self._index(self.strings, ("s", s), s)

    def value(self, v: Any) -> int:
        return -1 if v is None else self._index(self.values, ("v", id(v)), v)

    def standin(self, f: Fact | None) -> int:
        if f is None:
            return -1
        key = ("f", id(f))
        if key not in self._ids:
            row = [f.version, f.type, self.value(f.data), self.value(f.cause)]
            return self._index(self.standins, key, row)
        return self._ids[key]

    def shape(self, s: AccountState) -> int:
        return self._index(self._shapes, ("a", id(s)), s)

    def shape_ints(self) -> array[int]:
        out = array("q")
        for s in self._shapes:
            for n in STATE_FIELDS:
                v = getattr(s, n)
                out.append(self.standin(v) if n in FACT_FIELDS else self.string(v))
        return out

    def template(self, t: Template) -> None:
        ints = self.ints
        ints.extend((self.string(t.region), t.klo, t.m, t.slots))
        ints.extend((-1 if t.first_registration is None else t.first_registration, len(t.events)))
        for lo, hi, shapes in t.beliefs:
            ints.extend((lo, hi))
            ints.extend(self.shape(s) for s in shapes)
        for (ty, v, e, r, d, c), mask in zip(t.events, t.masks, strict=True):
            ints.extend((self.string(ty), v, e, r, self.value(d), self.value(c), mask))


def tables(interner: Interner) -> tuple[dict[str, Any], array[int]]:
    """(The JSON part: values, stand-ins, strings; the numbers: shapes, then templates)."""
    w = _Writer()
    for t in interner.templates:
        w.template(t)
    shapes = w.shape_ints()  # after the templates: they name the shapes; it names stand-ins
    ints = array("q", [len(w._shapes), len(interner.templates)])
    ints += shapes
    ints += w.ints
    return {"values": w.values, "standins": w.standins, "strings": w.strings}, ints


class _Walk:
    """The numbers, one after another, each checked to be in its range."""

    def __init__(self, ints: array[int]) -> None:
        self.ints, self.at = ints, 0

    def int(self, low: int, high: int) -> int:
        v = self.ints[self.at]  # IndexError past the end: the file is refused
        self.at += 1
        if not low <= v < high:
            raise TypeError("a number out of range")
        return v

    def of(self, table: list[Any], none: bool = False) -> Any:
        """The entry of `table` the next number names (-1: None, where allowed)."""
        i = self.int(-1 if none else 0, len(table))
        return None if i == -1 else table[i]


def read_tables(d: dict[str, Any], ints: array[int], interner: Interner) -> list[int]:
    """The file's templates, in its order, as interner ids (equal content, one template);
    TypeError, ValueError, IndexError, KeyError for anything not as written."""
    values = d["values"]
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise TypeError("values")
    values = [interner.value(v) for v in values]
    strings = d["strings"]
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise TypeError("strings")
    standins = [_standin(row, values, interner) for row in d["standins"]]
    walk = _Walk(ints)
    n_shapes, n_templates = walk.int(0, _LIMIT), walk.int(0, _LIMIT)
    shapes = [_shape(walk, standins, strings, interner) for _ in range(n_shapes)]
    ids = [_template(walk, shapes, values, strings, interner) for _ in range(n_templates)]
    if walk.at != len(ints):
        raise ValueError("numbers after the last template")
    return ids


def _standin(row: Any, values: list[Any], interner: Interner) -> Fact:
    index, type_, data, cause = row
    if not (type(index) is int and 0 <= index < 1 << 20 and isinstance(type_, str)):
        raise TypeError("a stand-in")
    if type(data) is not int or type(cause) is not int or cause < -1:
        raise TypeError("a stand-in's data")
    return interner.standin(index, type_, values[data], None if cause == -1 else values[cause])


def _shape(
    walk: _Walk, standins: list[Fact], strings: list[str], interner: Interner
) -> AccountState:
    fields_ = {
        n: walk.of(standins, none=True) if n in FACT_FIELDS else walk.of(strings, n == "partner")
        for n in STATE_FIELDS
    }
    return interner.shape(AccountState(**fields_))


def _template(
    walk: _Walk,
    shapes: list[AccountState],
    values: list[Any],
    strings: list[str],
    interner: Interner,
) -> int:
    """One template, every number checked; its id in the interner."""
    region = walk.of(strings)
    klo, m = walk.int(0, 1 << 16), walk.int(0, 1 << 16)
    slots = walk.int(klo + m, 1 << 16)
    first, n = walk.int(-1, 1 << 16), walk.int(0, 1 << 16)
    beliefs = []
    for _ in range(m):
        lo = walk.int(0, slots + 1)
        hi = walk.int(lo, slots + 1)
        beliefs.append((lo, hi, tuple(walk.of(shapes) for _ in range(hi - lo))))
    events, masks = [], []
    for _ in range(n):
        ty, version = walk.of(strings), walk.int(1, _LIMIT)
        e, r = walk.int(0, slots), walk.int(0, slots)
        events.append((ty, version, e, r, walk.of(values), walk.of(values, none=True)))
        masks.append(walk.int(0, (WHO_HOLES | OWN_HOLE) + 1))
    if first >= n:
        raise TypeError("the first registration")
    template = Template.of(
        region,
        klo,
        m,
        tuple(beliefs),
        tuple(events),
        slots,
        None if first == -1 else first,
        tuple(masks),
    )
    return interner.template(template)
