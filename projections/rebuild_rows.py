"""A rebuild's per-account work, done once per *kind* of account.

Most accounts differ only in their times and ids: a registration, maybe a rule-caused
revocation. Their narrow rows (state_intervals.account_rows) and their check-index template
(check_index.Interner.encode) are the same up to those times, because both depend on the
times only through their order (and, for the `accounts` row, through where now falls among
them). So `Kinds` works out the rows and the template for the first account of a kind, with
every time replaced by its rank among the account's times, and for every other account of
that kind only puts its own times and id in. A kind is the account's events without their
times (type, version, rank of each time, data without its command_id, cause), its region,
and how many of its times are past. The one text of a row that quotes times (rule 7's
reason names the registration's) makes its account's kind one to work out account by
account, as before; every other text comes from the events' data and causes.

tests/integration/test_rebuild_parts.py holds the rows and the index codes equal to those
worked out account by account.
"""

from __future__ import annotations

import marshal
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from entitlements.domain.rules import Fact
from entitlements.domain.times import EPOCH
from projections.check_index import (
    CheckIndex,
    split_cause,
    split_data,
    to_us,
)
from projections.state_intervals import ACCOUNT_COLUMNS, account_rows

#: How a time is written into a row (SQLite keeps text); None stays None.
When = Callable[[datetime | None], Any]
#: A row with its times as ranks, and where the times are.
Recipe = tuple[tuple[Any, ...], tuple[int, ...]]
_REASON = ACCOUNT_COLUMNS.index("not_registered_reason")  # a text that can name times
_US = timedelta(microseconds=1)
_UNSEEN = object()  # a kind not met yet


class _Kind:
    """What every account of one kind gets: rows as recipes, an index template and which
    of the account's times fill its slots."""

    __slots__ = ("number", "account_row", "state_rows", "template_id", "slot_ranks")

    def __init__(
        self,
        number: int,
        account_row: Recipe,
        state_rows: tuple[Recipe, ...],
        template_id: int,
        slot_ranks: tuple[int, ...],
    ) -> None:
        self.number = number  # the order it was met in: how another process names it
        self.account_row = account_row
        self.state_rows = state_rows
        self.template_id = template_id
        self.slot_ranks = slot_ranks

    @property
    def recipes(self) -> tuple[Recipe, tuple[Recipe, ...]]:
        """Its rows, times as ranks (plain values: what another process fills in)."""
        return self.account_row, self.state_rows


class Kinds:
    """Rows and index codes of accounts, worked out once per kind (see the module's doc)."""

    def __init__(self, index: CheckIndex, now: datetime, when: When | None = None) -> None:
        self.index = index
        self.now = now
        self._now_us = to_us(now)
        self.when: When = when or _same
        self._kinds: dict[Any, _Kind | None] = {}  # by `_key`
        self._contents: dict[Any, int] = {}  # a data or cause dict's content -> a small int
        self.codes: dict[str, int] = {}  # account -> its code in the index's store
        self._add = index.store.add

    def __len__(self) -> int:
        return len(self._kinds)

    def rows(
        self, account_id: str, region: str, facts: Sequence[Fact]
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """The account's `accounts` row and state rows (as `account_rows` gives them, times
        written by `when`); its code in the index goes into `codes`."""
        kind, _ = self.place(account_id, region, facts)
        if kind is None:  # its rows quote a time: worked out for itself
            return account_rows(account_id, region, facts, self.now, self.when)
        return rows_of_kind(kind.recipes, account_id, list(map(self.when, _times(facts))))

    def place(
        self, account_id: str, region: str, facts: Sequence[Fact]
    ) -> tuple[_Kind | None, list[int]]:
        """The account's kind (None: its rows are its own, `account_rows`) and its times in
        microseconds, in order; its code in the index goes into `codes`. Times are ranked
        as integers (exact): a fresh datetime's hash costs more than making it one."""
        effective = [(f.effective_at - EPOCH) // _US for f in facts]
        recorded = [(f.recorded_at - EPOCH) // _US for f in facts]
        us = sorted({*effective, *recorded})
        rank = {u: i for i, u in enumerate(us)}
        key, who = self._key(
            region,
            bisect_right(us, self._now_us),
            [(f, rank[e], rank[r]) for f, e, r in zip(facts, effective, recorded, strict=True)],
        )
        kind = self._kinds.get(key, _UNSEEN)
        if kind is _UNSEEN:
            kind = self._kinds[key] = self._new_kind(account_id, region, facts, _times(facts))
        if kind is None:
            template_id, slots, own = self.index.interner.encode(facts)
            self.codes[account_id] = self._add(template_id, slots, own)
            return None, []
        assert isinstance(kind, _Kind)
        self.codes[account_id] = self._add(kind.template_id, [us[r] for r in kind.slot_ranks], who)
        return kind, us

    def _key(
        self, region: str, past: int, ranked: list[tuple[Fact, int, int]]
    ) -> tuple[Any, list[str]]:
        """The account's kind (see the module's doc) as the marshal bytes of all it is made
        of (version 2: no back-references, so equal bytes, equal content; 1, True and 1.0
        differ, key order counts), with the holes the index's template has (who asked, the
        account's own stream in a cause: no row quotes them): one call where a content per
        data and cause took four. Values marshal refuses (a datetime, a UUID...) make it a
        tuple, each data and cause named by `_content`. With it, the account's own who-asked
        values, in the order its template's holes take them (`split_data` finds them)."""
        parts: list[Any] = [region, past]
        values: list[str] = []
        for f, e, r in ranked:
            data, who = split_data(f.data)
            cause, own = split_cause(f.cause, f.stream)
            parts += (f.type, f.version, e, r, data, cause, who is None, own)
            if who is not None:
                values += who
        try:
            return marshal.dumps(parts, 2), values
        except ValueError:
            content = self._content
            return (
                region,
                past,
                *[
                    (
                        *parts[i : i + 4],
                        content(parts[i + 4]),
                        content(parts[i + 5]),
                        *parts[i + 6 : i + 8],
                    )
                    for i in range(2, len(parts), 8)
                ],
            ), values

    def _new_kind(
        self, account_id: str, region: str, facts: Sequence[Fact], times: list[datetime]
    ) -> _Kind | None:
        """Rows (times as datetimes) and template of this account, its times made ranks."""
        row, states = account_rows(account_id, region, facts, self.now)
        if any(s[_REASON] for s in states):  # rule 7's reason names the registration's times
            return None
        rank = {t: i for i, t in enumerate(times)}
        recipes = [_recipe(r, rank) for r in (row, *states)]
        template_id, slot_times, _ = self.index.interner.encode(facts)
        rank_of_us = {to_us(t): i for i, t in enumerate(times)}
        return _Kind(
            sum(k is not None for k in self._kinds.values()),
            recipes[0],
            tuple(recipes[1:]),
            template_id,
            tuple(rank_of_us[us] for us in slot_times),
        )

    def _content(self, value: Mapping[str, Any] | None) -> int:
        """A small int per distinct content (keys in order, values and their types; who
        asked stands for anyone): equal ints, equal data for rows and template. The
        content is named by its marshal bytes (version 2: no back-references, so equal
        content, equal bytes; 1 and True differ), or its repr for values marshal refuses."""
        if value is None:
            return -1
        value = split_data(value)[0]
        key: Any
        try:
            key = marshal.dumps(cast(Any, value), 2)
        except ValueError:  # a datetime, a UUID, a Decimal...: their reprs name them
            key = repr(value)
        found = self._contents.get(key)
        if found is None:
            found = self._contents[key] = len(self._contents)
        return found


def _same(t: datetime | None) -> Any:
    return t


class Written:
    """Times in microseconds as `when` writes them, the recent ones remembered: an account's
    times are mostly its own, but a rule's or a fan-out's are shared by every account it
    touched (of three times an account here, two), and writing one costs about 2 us. A
    shared time is one text object, so a batch pickled for the writer process carries it
    once."""

    KEEP = 10_000  # times remembered before starting afresh (a few hundred kB)

    def __init__(self, when: When | None = None) -> None:
        # Its own memo stands for `when`'s (sql_views._sqlite_time's lru_cache): a time
        # met again is found here, one not met costs the cache's upkeep for nothing.
        self.when: When = getattr(when, "__wrapped__", when) or _same
        self._known: dict[int, Any] = {}

    def __call__(self, us: list[int]) -> list[Any]:
        known, when = self._known, self.when
        if len(known) > self.KEEP:
            known.clear()
        written = []
        for u in us:
            w = known.get(u, _UNSEEN)
            if w is _UNSEEN:  # `from_us(u)`, in a third of its time (exact: whole numbers)
                w = known[u] = when(EPOCH + _US * u)
            written.append(w)
        return written


def _times(facts: Sequence[Fact]) -> list[datetime]:
    """The account's distinct times, in order."""
    return sorted({f.effective_at for f in facts} | {f.recorded_at for f in facts})


def _recipe(row: tuple[Any, ...], rank: dict[datetime, int]) -> Recipe:
    """The row with each time made its rank, and where they are."""
    values, where = list(row), []
    for i, v in enumerate(values):
        if isinstance(v, datetime):
            values[i] = rank[v]
            where.append(i)
    return tuple(values), tuple(where)


def rows_of_kind(
    recipes: tuple[Recipe, tuple[Recipe, ...]], account_id: str, written: list[Any]
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """An account's rows from its kind's recipes and its own times, written, in order."""
    account_row, state_rows = recipes
    return _fill(account_row, account_id, written), [
        _fill(recipe, account_id, written) for recipe in state_rows
    ]


def _fill(recipe: Recipe, account_id: str, written: list[Any]) -> tuple[Any, ...]:
    values, where = recipe
    row = list(values)
    row[0] = account_id
    for i in where:
        row[i] = written[row[i]]
    return tuple(row)
