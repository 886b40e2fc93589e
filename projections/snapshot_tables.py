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
from collections.abc import Sequence
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


def tables(templates: list[Template]) -> tuple[dict[str, Any], array[int]]:
    """(The JSON part: values, stand-ins, strings; the numbers: shapes, then templates)."""
    w = _Writer()
    for t in templates:
        w.template(t)
    shapes = w.shape_ints()  # after the templates: they name the shapes; it names stand-ins
    ints = array("q", [len(w._shapes), len(templates)])
    ints += shapes
    ints += w.ints
    return {"values": w.values, "standins": w.standins, "strings": w.strings}, ints


class _Walk:
    """The numbers, run after run, each run checked to be in its range (C-level min and
    max of a slice: no call per number)."""

    def __init__(self, ints: array[int]) -> None:
        self.ints, self.at = ints, 0

    def take(self, k: int) -> array[int]:
        run = self.ints[self.at : self.at + k]
        if len(run) != k:
            raise ValueError("numbers cut short")
        self.at += k
        return run


def _within(run: Sequence[int], low: int, high: int) -> Sequence[int]:
    """`run`, when every number of it is in [low, high); TypeError if not."""
    if run and (min(run) < low or max(run) >= high):
        raise TypeError("a number out of range")
    return run


def read_tables(d: dict[str, Any], ints: array[int], interner: Interner) -> list[int]:
    """The file's templates, in its order, as interner ids; TypeError, ValueError,
    IndexError, KeyError for anything not as written."""
    values = d["values"]
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise TypeError("values")
    values = [interner.value(v) for v in values]
    strings = d["strings"]
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise TypeError("strings")
    standins = [_standin(row, values, interner) for row in d["standins"]]
    walk = _Walk(ints)
    n_shapes, n_templates = _within(walk.take(2), 0, _LIMIT)
    shapes = _shapes(walk.take(n_shapes * len(STATE_FIELDS)), standins, strings, interner)
    # an index of -1 names the None at the end of these
    tables = (strings, [*values, None], shapes)
    ids = [_template(walk, tables, interner) for _ in range(n_templates)]
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


def _shapes(
    run: array[int], standins: list[Fact], strings: list[str], interner: Interner
) -> list[AccountState]:
    """Shapes, a field after another (STATE_FIELDS), each field's column checked at once."""
    width = len(STATE_FIELDS)
    columns = []
    for i, n in enumerate(STATE_FIELDS):
        column = run[i::width]
        if n in FACT_FIELDS:
            table: list[Any] = [*standins, None]
            _within(column, -1, len(standins))
        else:
            table = [*strings, None]
            _within(column, -1 if n == "partner" else 0, len(strings))
        columns.append(map(table.__getitem__, column))
    return [interner.shape(AccountState(*fields_)) for fields_ in zip(*columns, strict=True)]


_EVENT = 7  # numbers an event takes: type, version, effective, recorded, data, cause, mask


def _template(
    walk: _Walk, tables: tuple[list[str], list[Any], list[AccountState]], interner: Interner
) -> int:
    """One template, every number checked; its id in the interner."""
    strings, values, shapes = tables
    region, klo, m, slots, first, n = walk.take(6)
    _within((region, klo, m, n), 0, 1 << 16)
    if not (klo + m <= slots < 1 << 16 and -1 <= first < n and region < len(strings)):
        raise TypeError("a template's numbers")
    beliefs = []
    for _ in range(m):
        lo, hi = walk.take(2)
        if not 0 <= lo <= hi <= slots:
            raise TypeError("a belief's slots")
        ids = _within(walk.take(hi - lo), 0, len(shapes))
        beliefs.append((lo, hi, tuple(map(shapes.__getitem__, ids))))
    run = walk.take(n * _EVENT)
    types = _within(run[0::_EVENT], 0, len(strings))
    _within(run[1::_EVENT], 1, _LIMIT)
    times = _within(run[2::_EVENT], 0, slots), _within(run[3::_EVENT], 0, slots)
    data = _within(run[4::_EVENT], 0, len(values) - 1)
    causes = _within(run[5::_EVENT], -1, len(values) - 1)
    masks = tuple(_within(run[6::_EVENT], 0, (WHO_HOLES | OWN_HOLE) + 1))
    events = zip(
        map(strings.__getitem__, types),
        run[1::_EVENT],
        *times,
        map(values.__getitem__, data),
        map(values.__getitem__, causes),
        strict=True,
    )
    template = Template.of(
        strings[region],
        klo,
        m,
        tuple(beliefs),
        tuple(events),
        slots,
        None if first == -1 else first,
        masks,
    )
    return interner.adopt(template)
