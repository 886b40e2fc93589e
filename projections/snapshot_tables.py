"""The check index's shared tables as a snapshot holds them, and read back.

The tables are what accounts share: data and cause dicts (`values`), stand-in facts,
shapes (states made of stand-ins) and templates (check_index.Interner). A store built by
real commands has tens of thousands of templates (every mix of plans, reasons, partners and
time orders an account can have), so they are not JSON rows, which decode into a list and
an int object per number and leave the process's memory fragmented once freed: shapes and
templates are one `array('q')` of numbers in columns (every template's region, then every
one's first known slot, ...; every belief's slots; every event's type, ...), strings an
index into a short list. The loader checks each column at once (C-level min, max and
comparisons of whole columns: no call per number) and then makes only what it keeps.
Dicts and stand-ins (a few hundred) stay JSON. Every number is checked against what it
indexes; nothing read can run.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import chain, repeat
from operator import add, le, lt, sub
from typing import Any

from entitlements.domain.rules import AccountState, Fact
from projections.check_index import (
    FACT_FIELDS,
    OWN_HOLE,
    STATE_FIELDS,
    WHO_HOLES,
    Interner,
    Template,
)

_LIMIT = 1 << 62
_SMALL = 1 << 16  # slots, beliefs and events a template may have
#: The columns, in the file's order: per template, per belief, per start, per event.
_TEMPLATE = ("region", "klo", "m", "slots", "first", "n")
_BELIEF = ("lo", "hi")
_START = ("shape",)
_EVENT = ("type", "version", "effective", "recorded", "data", "cause", "mask")


class _Writer:
    """Numbers out, each table's entries named by their index, met in order."""

    def __init__(self) -> None:
        self.columns: dict[str, list[int]] = {
            n: [] for n in (*_TEMPLATE, *_BELIEF, *_START, *_EVENT)
        }
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
        first = -1 if t.first_registration is None else t.first_registration
        row = (self.string(t.region), t.klo, t.m, t.slots, first, len(t.events))
        for name, v in zip(_TEMPLATE, row, strict=True):
            self.columns[name].append(v)
        for lo, hi, shapes in t.beliefs:
            self.columns["lo"].append(lo)
            self.columns["hi"].append(hi)
            self.columns["shape"] += map(self.shape, shapes)
        for (ty, v, e, r, d, c), mask in zip(t.events, t.masks, strict=True):
            event = (self.string(ty), v, e, r, self.value(d), self.value(c), mask)
            for name, x in zip(_EVENT, event, strict=True):
                self.columns[name].append(x)


def tables(templates: list[Template]) -> tuple[dict[str, Any], array[int]]:
    """(The JSON part: values, stand-ins, strings; the numbers: how many shapes, templates,
    beliefs, starts and events, then the shapes, then the columns)."""
    w = _Writer()
    for t in templates:
        w.template(t)
    shapes = w.shape_ints()  # after the templates: they name the shapes; it names stand-ins
    c = w.columns
    ints = array("q", [len(w._shapes), len(templates), len(c["lo"]), len(c["shape"])])
    ints.append(len(c["type"]))
    ints += shapes
    for name in (*_TEMPLATE, *_BELIEF, *_START, *_EVENT):
        ints.extend(c[name])
    return {"values": w.values, "standins": w.standins, "strings": w.strings}, ints


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
    n_shapes, n_templates, n_beliefs, n_starts, n_events = _within(ints[:5], 0, _LIMIT)
    at = 5 + n_shapes * len(STATE_FIELDS)
    shapes = _shapes(ints[5:at], standins, strings, interner)
    columns: dict[str, array[int]] = {}
    for names, count in (
        (_TEMPLATE, n_templates),
        (_BELIEF, n_beliefs),
        (_START, n_starts),
        (_EVENT, n_events),
    ):
        for name in names:
            columns[name], at = ints[at : at + count], at + count
    if at != len(ints) or len(columns["type"]) != n_events:
        raise ValueError("numbers cut short, or after the last column")
    _check_templates(columns, len(strings))
    _check_events(columns, len(strings), len(values), len(shapes))
    return _templates(columns, (strings, values, shapes), interner)


def _check_templates(c: dict[str, array[int]], strings: int) -> None:
    """Each template's numbers in range, and its beliefs' slots within its slots."""
    _within(c["region"], 0, strings)
    for name in ("klo", "m", "slots", "n"):
        _within(c[name], 0, _SMALL)
    if not all(map(le, map(add, c["klo"], c["m"]), c["slots"])):
        raise TypeError("a template's known slots past its slots")
    _within(c["first"], -1, _SMALL)
    if not all(map(lt, c["first"], c["n"])):
        raise TypeError("the first registration")
    if sum(c["m"]) != len(c["lo"]) or sum(c["n"]) != len(c["type"]):
        raise TypeError("beliefs or events not the templates'")
    slots = list(chain.from_iterable(map(repeat, c["slots"], c["m"])))  # each belief's
    _within(c["lo"], 0, _SMALL)
    if not (all(map(le, c["lo"], c["hi"])) and all(map(le, c["hi"], slots))):
        raise TypeError("a belief's slots")
    if sum(map(sub, c["hi"], c["lo"])) != len(c["shape"]):
        raise TypeError("starts not the beliefs'")


def _check_events(c: dict[str, array[int]], strings: int, values: int, shapes: int) -> None:
    """Each event's numbers in range, its times within its template's slots."""
    _within(c["shape"], 0, shapes)
    _within(c["type"], 0, strings)
    _within(c["version"], 1, _LIMIT)
    _within(c["data"], 0, values)
    _within(c["cause"], -1, values)
    _within(c["mask"], 0, (WHO_HOLES | OWN_HOLE) + 1)
    for name in ("effective", "recorded"):
        slots = chain.from_iterable(map(repeat, c["slots"], c["n"]))  # each event's
        _within(c[name], 0, _SMALL)
        if not all(map(lt, c[name], slots)):
            raise TypeError("an event's time past its template's slots")


def _templates(
    c: dict[str, array[int]],
    tables: tuple[list[str], list[Any], list[AccountState]],
    interner: Interner,
) -> list[int]:
    """The templates the checked columns say, each taken in by the interner: its id."""
    strings, values, shapes = tables
    at_start = list(map(shapes.__getitem__, c["shape"]))
    causes = [*values, None]  # -1: no cause
    events = list(
        zip(
            map(strings.__getitem__, c["type"]),
            c["version"],
            c["effective"],
            c["recorded"],
            map(values.__getitem__, c["data"]),
            map(causes.__getitem__, c["cause"]),
            strict=True,
        )
    )
    lo, hi, masks = c["lo"], c["hi"], c["mask"]
    ids, b, s, e = [], 0, 0, 0
    for region, klo, m, slots, first, n in zip(*(c[name] for name in _TEMPLATE), strict=True):
        rows = []
        for i in range(b, b + m):
            rows.append((lo[i], hi[i], tuple(at_start[s : s + hi[i] - lo[i]])))
            s += hi[i] - lo[i]
        beliefs, kept = interner.shared(tuple(rows), events[e : e + n])
        template = Template.of(
            strings[region],
            klo,
            m,
            beliefs,
            kept,
            slots,
            None if first == -1 else first,
            tuple(masks[e : e + n]),
        )
        ids.append(interner.adopt(template))
        b, e = b + m, e + n
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
    if len(run) % width:
        raise ValueError("a shape cut short")
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
