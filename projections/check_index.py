"""The hot path: checks answered from a compact index in memory, never from the store.

Per account the index keeps one int: which *template* its timeline follows and where its
times start in one shared `array('q')` of microseconds. A template is everything about an
account's timeline but its times and who asked: the structure of its beliefs (known times,
effective starts, as slots into the account's times), the *shape* of each state, and its
events without their times, with holes where an event names who asked (`command_id`,
`actor`) or the account's own stream (a rule-caused event's trigger). Those values are the
account's own, one per command, so they are a record per account in compressed blocks
(records.py), whose pointer is one more slot after its times. Accounts that differ only in
their times and who asked (most of them) share one template, so the per-account cost is
one dict entry, one int, a few 8-byte times and its record. No `Fact` is kept per account.

A shape is an `AccountState` whose facts are stand-ins (`stream == ""`, `version` = the
event's index in the account's events) carrying the data `decide` reads, so equal states
of different accounts are ONE object, and decisions are memoised per (shape, region state,
capability). A Decision cites stand-ins as indices; its `because` builds the account's real
Facts (times from the array) only when read.

- "now" (no `at`, no `as_known_at`): the answer is kept per template and capability (not
  per account: a Decision per account would cost more than the account's whole entry), for
  the accounts of the template whose every effective time is past (one comparison in the
  array), until the region's next change point (rule 9: a future-effective event takes
  effect on time with no new event recorded); other accounts are decided from the array.
  The decisions of the accounts checked last are kept too, in a small dict (one lookup).
- `at` / `as_known_at`: two bisects in the shared array, then the memoised verdict.
- `route_via:R` (rule 10) reads R's line instead of the account's region's (`_VIA`: one
  dict lookup, also made for the other capabilities); its cells are memoised alike, keyed
  by the shape (which holds the choice of data regions), R's state and the capability, and
  its "now" answers are kept per template under the capability's name, until R's next
  change point. So it costs what `host` costs (benchmarks/test_route_via_path.py).

Updates come from `update(facts, changed)` (catch-up, follow, rebuild); an account is
encoded on its next check, not in the update. Readers take no lock; writers hold one, and a
generation counter keeps a check that raced an update from caching a stale answer.
"""

from __future__ import annotations

import json
import marshal
import threading
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import islice
from time import time
from typing import Any, cast
from weakref import WeakKeyDictionary

from entitlements.domain.decisions import Decision, UnknownAccount
from entitlements.domain.event_facts import standin
from entitlements.domain.events import ACCOUNT_REGISTERED
from entitlements.domain.rules import (
    CAPABILITIES,
    WHO_FIELDS,
    AccountState,
    Fact,
    RegionState,
    all_capabilities,
    capability_region,
    check_capability,
    decide,
    fold_account,
    route_via_region,
)
from entitlements.domain.times import EPOCH, When, aware
from projections.facts import Changed
from projections.records import END, FIELD, Records
from projections.timeline import (
    EMPTY_REGION,
    Timeline,
    build_timeline,
    region_timeline,
)

CACHE_SIZE = 1 << 21  # memoised cells kept (oldest evicted first)
#: Rule 7's verdicts kept (one an account, capability and region state: each cites the
#: account's own registration; about 12 MB when full, 708 B a verdict measured), apart from
#: CACHE_SIZE's cells, so that a sweep over a million accounts does not crowd those out.
NOT_YET_SIZE = 1 << 14
HOT_SIZE = 1 << 14  # "now" decisions of the accounts checked last, kept (oldest evicted first)
SLOTS = {cap: i for i, cap in enumerate(CAPABILITIES)}
#: R of each `route_via:R` asked so far (at most 26 * 26 entries): the region whose line
#: answers it, one dict lookup on the hot path (a capability absent here is answered from
#: the account's own region, or is not yet known to be a route_via).
_VIA: dict[str, str] = {}
_US = timedelta(microseconds=1)
SHIFT = 32  # code = offset << SHIFT | template id
MASK = (1 << SHIFT) - 1
#: In an account's record (projections.records), ABSENT for a who-asked key its event does
#: not have. OWN stands for the account's own stream in a template's cause.
ABSENT, OWN = "\x00", "\x00own"
#: An event's holes (its template's mask): who asked (every key of WHO_FIELDS, absent ones
#: too), and the account's own stream in its cause.
WHO_HOLES, OWN_HOLE = 1, 2
STATE_FIELDS = tuple(f.name for f in fields(AccountState))
FACT_FIELDS = tuple(n for n in STATE_FIELDS if n not in ("region", "plan", "channel", "partner"))


def to_us(t: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (exact)."""
    return (t - EPOCH) // _US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


class _Now(Decision):
    """A "now" decision that holds until `self[5]` (epoch seconds), the next change point."""

    __slots__ = ()


_new = tuple.__new__  # a Decision without the keyword handling of Decision.__new__


#: Where event i of a template takes values from the account's record: (the first value's
#: place in the record, the data keys that take them, whether its cause names the account).
Hole = tuple[int, tuple[str, ...], bool]
Event = tuple[str, int, int, int, dict[str, Any], dict[str, Any] | None]


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """An account timeline without its times. Slots index the account's run of times in
    the shared array: known[i] = slot klo + i; belief i's starts are slots lo..hi. An
    account whose events have holes keeps one more slot after its times: where its record
    starts. `holes` and `who_keys` follow from `masks` (see `Template.of`)."""

    region: str
    klo: int
    m: int  # number of known (recorded) times = beliefs
    beliefs: tuple[tuple[int, int, tuple[AccountState, ...]], ...]
    events: tuple[Event, ...]
    slots: int  # how many times an account of this template keeps
    first_registration: int | None  # event index of rule 7's "not yet" registration
    masks: tuple[int, ...]  # per event: WHO_HOLES | OWN_HOLE
    holes: tuple[Hole | None, ...]  # per event
    who_keys: tuple[str, ...]  # the key of each value of an account's record

    @classmethod
    def of(
        cls,
        region: str,
        klo: int,
        m: int,
        beliefs: tuple[tuple[int, int, tuple[AccountState, ...]], ...],
        events: tuple[Event, ...],
        slots: int,
        first_registration: int | None,
        masks: tuple[int, ...],
    ) -> Template:
        """The template with its holes worked out from its masks."""
        masks, holes, keys = _holes(masks)
        return cls(region, klo, m, beliefs, events, slots, first_registration, masks, holes, keys)

    @property
    def width(self) -> int:
        """Slots an account of this template takes in the array: its times, its record's."""
        return self.slots + 1 if self.who_keys else self.slots


@lru_cache(maxsize=4096)
def _holes(
    masks: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[Hole | None, ...], tuple[str, ...]]:
    """The masks, each event's hole and the keys of a record, one of each for all the
    templates with these masks."""
    holes: list[Hole | None] = []
    keys: list[str] = []
    for mask in masks:
        mine = WHO_FIELDS if mask & WHO_HOLES else ()
        holes.append((len(keys), mine, bool(mask & OWN_HOLE)) if mask else None)
        keys += mine
    return masks, tuple(holes), tuple(keys)


@dataclass(slots=True, eq=False)
class RegionLine:
    """A region's timeline with times in microseconds (few regions: kept as they are).
    Immutable but for `last`, a one-entry memo (many checks ask at the same (T, K))."""

    known: tuple[int, ...]
    beliefs: tuple[tuple[tuple[int, ...], tuple[RegionState, ...]], ...]
    before: RegionState
    timeline: Timeline[RegionState]
    fixed: RegionState | None  # the state at every (T, K) when the region has no events
    last: tuple[int | None, int | None, RegionState | None] = (None, None, None)

    @classmethod
    def of(cls, timeline: Timeline[RegionState]) -> RegionLine:
        before = timeline.before or RegionState("")
        return cls(
            tuple(to_us(k) for k in timeline.known),
            tuple((tuple(to_us(t) for t in b.starts), b.states) for b in timeline.beliefs),
            before,
            timeline,
            None if timeline.beliefs else before,
        )

    def state_at(self, t: int, k: int | None) -> RegionState:
        if k is None:
            if not self.beliefs:
                return self.before
            starts, states = self.beliefs[-1]
        else:
            i = bisect_right(self.known, k) - 1
            if i < 0:
                return self.before
            starts, states = self.beliefs[i]
        j = bisect_right(starts, t) - 1
        return states[j] if j >= 0 else self.before

    def next_change(self, t: int) -> int | None:
        if not self.beliefs:
            return None
        starts = self.beliefs[-1][0]
        j = bisect_right(starts, t)
        return starts[j] if j < len(starts) else None


EMPTY_LINE = RegionLine.of(EMPTY_REGION)


class Interner:
    """Templates and what they are made of, one object per distinct value, for every
    account of the process (and of the snapshots it loads). Its lookups are keyed by the
    hash of what they look up and checked on a hit, so they cost an int per template, not
    a copy of it; templates share their rows."""

    def __init__(self) -> None:
        self.templates: list[Template] = []
        self._template_ids: dict[int, Any] = {}  # hash of a template's content -> id(s)
        self._named = 0  # templates named in _template_ids (those adopted after: not yet)
        self._values: dict[Any, Any] = {}  # a data/cause dict's items (or JSON) -> the one dict
        self._standins: dict[tuple[Any, ...], Fact] = {}
        self._shapes: dict[int, Any] = {}  # hash of a shape's content -> shape(s)
        self._rows: dict[Any, Any] = {}  # a template's beliefs, rows and events, shared
        # events without times (times as ranks; marshal bytes) -> (template id, rank of
        # each slot): an account like one met needs no fold
        self._by_signature: dict[bytes, tuple[int, tuple[int, ...]]] = {}

    def value(self, v: dict[str, Any] | None) -> Any:
        """The one dict equal to `v` (keys in the same order, values of the same types),
        named by its marshal bytes (version 2: no back-references, so equal content, equal
        bytes; 1, True and 1.0 differ; nested dicts too, such as a cause's rule_event), or,
        for a value marshal refuses (a datetime, a UUID, a str subclass), by its items and
        their types, or its JSON."""
        if v is None:
            return None
        key: Any
        try:
            key = marshal.dumps(v, 2)
        except ValueError:
            try:
                key = tuple([(k, x.__class__, x) for k, x in v.items()])
                hash(key)
            except TypeError:  # nested and not marshalled: its JSON names it
                key = json.dumps(v)
        return self._values.setdefault(key, v)

    def standin(
        self, index: int, type_: str, data: dict[str, Any], cause: dict[str, Any] | None
    ) -> Fact:
        key = (index, type_, id(data), id(cause))
        f = self._standins.get(key)
        if f is None:
            f = self._standins[key] = standin(index, type_, data, cause)
        return f

    def shape(self, state: AccountState) -> AccountState:
        """The one shape equal to `state` (its facts by identity: stand-ins)."""
        key = _shape_key(state)
        h = hash(key)
        found: AccountState
        for found in _ids(self._shapes.get(h)):
            if _shape_key(found) == key:
                return found
        self._shapes[h] = _with(self._shapes.get(h), state)
        return state

    def template(self, t: Template) -> int:
        """The id of the template equal to `t` (`t` taken in, its rows shared, if none)."""
        ids, templates = self._template_ids, self.templates
        for i in range(self._named, len(templates)):  # adopted from a snapshot: named now
            h = hash(_template_key(templates[i]))
            ids[h] = _with(ids.get(h), i)
        self._named = len(templates)
        key = _template_key(t)
        h = hash(key)
        found: int
        for found in _ids(ids.get(h)):
            if _template_key(templates[found]) == key:
                return found
        beliefs, events = self.shared(t.beliefs, t.events)
        i = self.adopt(
            Template(
                t.region,
                t.klo,
                t.m,
                beliefs,
                events,
                t.slots,
                t.first_registration,
                t.masks,
                t.holes,
                t.who_keys,
            )
        )
        ids[h] = _with(ids.get(h), i)
        self._named = len(templates)
        return i

    def shared(
        self, beliefs: tuple[Any, ...], events: Sequence[Event]
    ) -> tuple[tuple[Any, ...], tuple[Event, ...]]:
        """A template's beliefs and events, each row one equal to another template's."""
        rows = self._rows
        kept = tuple(
            rows.setdefault((ty, v, e, r, id(d), id(c)), (ty, v, e, r, d, c))
            for ty, v, e, r, d, c in events
        )
        shared = tuple(rows.setdefault(b, b) for b in beliefs)  # shapes hash by identity
        return rows.setdefault(shared, shared), kept

    def adopt(self, t: Template) -> int:
        """Take `t` in as it is (a snapshot's templates are distinct: they are named in the
        lookup only when another template is looked up); its id."""
        self.templates.append(t)
        return len(self.templates) - 1

    # -- encoding an account's facts ------------------------------------------------------

    def encode(self, facts: Sequence[Fact]) -> tuple[int, list[int], list[str]]:
        """(template id, the account's times for its slots, the values of its holes)."""
        times = sorted({f.effective_at for f in facts} | {f.recorded_at for f in facts})
        rank = {t: i for i, t in enumerate(times)}
        skeleton, masks, values = self._skeleton(facts, rank)
        signature = marshal.dumps(
            [(ty, v, e, r, id(d), id(c)) for ty, v, e, r, d, c in skeleton] + [masks], 2
        )
        found = self._by_signature.get(signature)
        if found is None:
            found = self._by_signature[signature] = self._new_template(facts, skeleton, masks, rank)
        template_id, slot_ranks = found
        return template_id, [to_us(times[r]) for r in slot_ranks], values

    def _skeleton(
        self, facts: Sequence[Fact], rank: dict[datetime, int]
    ) -> tuple[list[tuple[Any, ...]], tuple[int, ...], list[str]]:
        """The events without times (times as ranks, data and causes with their holes,
        interned), each one's mask, and the values of the holes."""
        skeleton: list[tuple[Any, ...]] = []
        masks: list[int] = []
        values: list[str] = []
        for f in facts:
            data, who = split_data(f.data)
            cause, own = split_cause(f.cause, f.stream)
            d, c = self.value(data), self.value(cause)
            skeleton.append((f.type, f.version, rank[f.effective_at], rank[f.recorded_at], d, c))
            masks.append((WHO_HOLES if who is not None else 0) | (OWN_HOLE if own else 0))
            values += who or ()
        return skeleton, tuple(masks), values

    def _new_template(
        self,
        facts: Sequence[Fact],
        skeleton: list[tuple[Any, ...]],
        masks: tuple[int, ...],
        rank: dict[datetime, int],
    ) -> tuple[int, tuple[int, ...]]:
        standins = [
            self.standin(i, ty, data, cause)
            for i, (ty, _, _, _, data, cause) in enumerate(skeleton)
        ]
        index_of = {id(f): i for i, f in enumerate(facts)}

        def shape(state: AccountState) -> AccountState:
            swapped = {
                n: standins[index_of[id(v)]]
                for n in FACT_FIELDS
                if isinstance(v := getattr(state, n), Fact)
            }
            return self.shape(_replace(state, swapped))

        timeline = build_timeline(facts, fold_account, None)
        slot_ranks: list[int] = []

        def run(ranks: list[int]) -> int:
            """Where this run of times starts in the slots (reusing an equal run)."""
            n = len(ranks)
            for lo in range(len(slot_ranks) - n + 1):
                if slot_ranks[lo : lo + n] == ranks:
                    return lo
            slot_ranks.extend(ranks)
            return len(slot_ranks) - n

        klo = run([rank[k] for k in timeline.known])
        beliefs = []
        for b in timeline.beliefs:
            lo = run([rank[t] for t in b.starts])
            beliefs.append((lo, lo + len(b.starts), tuple(shape(s) for s in b.states)))
        events = []
        for ty, v, e, r, data, cause in skeleton:
            events.append((ty, v, run([e]), run([r]), data, cause))
        # rule 7's "not yet" registration, as fold_account names it: the first of them all
        registration = next((f for f in facts if f.type == ACCOUNT_REGISTERED), None)
        template = Template.of(
            region=next((f.data["region"] for f in facts if f.type == ACCOUNT_REGISTERED), ""),
            klo=klo,
            m=len(timeline.known),
            beliefs=tuple(beliefs),
            events=tuple(events),
            slots=len(slot_ranks),
            first_registration=index_of[id(registration)] if registration is not None else None,
            masks=masks,
        )
        return self.template(template), tuple(slot_ranks)


def _shape_key(state: AccountState) -> tuple[Any, ...]:
    return tuple(
        id(v) if isinstance(v, Fact) else v for v in (getattr(state, n) for n in STATE_FIELDS)
    )


def _template_key(t: Template) -> tuple[Any, ...]:
    """What makes a template the one it is (shapes and data by identity: interned)."""
    return (
        t.region,
        t.klo,
        t.m,
        tuple((lo, hi, tuple(map(id, shapes))) for lo, hi, shapes in t.beliefs),
        tuple((ty, v, e, r, id(d), id(c)) for ty, v, e, r, d, c in t.events),
        t.slots,
        t.first_registration,
        t.masks,
    )


def _ids(found: Any) -> Any:
    """The entries under a hash: none, one, or a list of them (hashes that collide)."""
    return () if found is None else found if found.__class__ is list else (found,)


def _with(found: Any, entry: Any) -> Any:
    return entry if found is None else [*_ids(found), entry]


def hoisted(value: Any) -> bool:
    """A who-asked value the account's record holds: a text, neither empty (an empty field
    repeats the key's value before it) nor ABSENT, without separators."""
    return (
        value.__class__ is str
        and value != ""
        and value != ABSENT
        and FIELD not in value
        and END not in value
    )


_ACTOR, _COMMAND = WHO_FIELDS  # in the order `with_who` appends them
_NONE = object()


def who_of(data: Mapping[str, Any]) -> list[str] | None:
    """The values of an event's who-asked holes (ABSENT for a key it does not have), when
    its who-asked keys are texts that come last, in the usual order (`with_who`: every
    command's events); None when it has none, or other ones (its template keeps them)."""
    actor, command = data.get(_ACTOR, _NONE), data.get(_COMMAND, _NONE)
    if (actor is _NONE and command is _NONE) or data.__class__ is not dict:
        return None
    back: Iterator[str] = reversed(cast(dict[str, Any], data))  # its keys, the last first
    if command is not _NONE:
        if not hoisted(command) or next(back) != _COMMAND:
            return None
        if actor is _NONE:
            return [ABSENT, command]
        return [actor, command] if hoisted(actor) and next(back) == _ACTOR else None
    return [actor, ABSENT] if hoisted(actor) and next(back) == _ACTOR else None


def split_data(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str] | None]:
    """(The data a template keeps, the values of its holes): who asked is the account's
    own (one per command: seldom shared), so a template keeps None for each who-asked key,
    absent ones too, in their place; data without such holes is kept whole."""
    values = who_of(data)
    kept = dict(data)
    if values is not None:
        kept.pop(_ACTOR, None)
        kept.pop(_COMMAND, None)
        kept[_ACTOR] = kept[_COMMAND] = None
    return kept, values


def split_cause(cause: Mapping[str, Any] | None, stream: str) -> tuple[Any, bool]:
    """(The cause a template keeps, whether it names the event's own stream): a rule-caused
    event's trigger is the account's own event, its stream made OWN."""
    if cause is None or not any(_names(v, stream) for v in cause.values()):
        return cause, False
    return {k: ({**v, "stream": OWN} if _names(v, stream) else v) for k, v in cause.items()}, True


def _names(value: Any, stream: str) -> bool:
    return value.__class__ is dict and value.get("stream") == stream


def _filled_cause(cause: Mapping[str, Any], stream: str) -> dict[str, Any]:
    return {k: ({**v, "stream": stream} if _names(v, OWN) else v) for k, v in cause.items()}


_W = len(WHO_FIELDS)  # a record's values: WHO_FIELDS' of each event with holes, in turn


def record(values: Sequence[str]) -> bytes:
    """An account's values as one record; a value its key had just before (an event
    earlier) is left empty: a rule-caused event repeats its command's who."""
    if len(values) > _W:
        values = [v if i < _W or v != values[i - _W] else "" for i, v in enumerate(values)]
    return (FIELD.join(values) + END).encode()


def unrecord(text: str, n: int) -> list[str]:
    """The n values of a record (a record too short reads as empty values)."""
    parts = text.split(FIELD)
    parts += [""] * (n - len(parts))
    for i in range(_W, n):
        parts[i] = parts[i] or parts[i - _W]
    return parts[:n]


def _replace(state: AccountState, changes: dict[str, Any]) -> AccountState:
    return AccountState(**{n: changes.get(n, getattr(state, n)) for n in STATE_FIELDS})


class Store:
    """The times of every encoded account and the records of who asked (append-only: a
    code stays valid for as long as a Decision holds the store)."""

    def __init__(self, interner: Interner) -> None:
        self.interner = interner
        self.times = array("q")
        self.who = Records()  # every account's record, where its last slot says

    def add(self, template_id: int, times: list[int], who: Sequence[str]) -> int:
        """An account's times and hole values in; its code out."""
        offset = len(self.times)
        self.times.extend(times)
        if self.interner.templates[template_id].who_keys:
            self.times.append(self.who.add(record(who)))
        return offset << SHIFT | template_id

    def values(self, template: Template, offset: int) -> list[str]:
        """The values of an account's holes, from its record."""
        pointer = self.times[offset + template.slots]
        return unrecord(self.who.read(pointer), len(template.who_keys))

    def event(
        self, account_id: str, code: int, index: int, values: list[str] | None = None
    ) -> Fact:
        """The account's event `index` (in effective order) as the Fact it was recorded as."""
        template = self.interner.templates[code & MASK]
        offset = code >> SHIFT
        ty, version, eff, rec, data, cause = template.events[index]
        hole = template.holes[index]
        stream = f"account:{account_id}"
        if hole is not None:
            first, keys, own = hole
            if keys:
                if values is None:
                    values = self.values(template, offset)
                data = dict(data)
                for i, k in enumerate(keys, first):
                    if values[i] == ABSENT:
                        data.pop(k, None)
                    else:
                        data[k] = values[i]
            if own:
                cause = _filled_cause(cause, stream)  # type: ignore[arg-type]
        return Fact(
            stream,
            ty,
            version,
            from_us(self.times[offset + eff]),
            from_us(self.times[offset + rec]),
            data,
            cause,
        )

    def facts(self, account_id: str, code: int) -> list[Fact]:
        template = self.interner.templates[code & MASK]
        values = self.values(template, code >> SHIFT) if template.who_keys else None
        return [self.event(account_id, code, i, values) for i in range(len(template.events))]

    def cite(self, refs: tuple[Any, ...], code: int, account_id: str) -> tuple[Fact, ...]:
        """A Decision's `because`: stand-ins (ints) become the account's real events."""
        return tuple(self.event(account_id, code, r) if r.__class__ is int else r for r in refs)


#: What the index keeps per account: its code, or its facts until first asked about.
Entry = int | list[Fact]
#: The "now" answers of a template's settled accounts: (the slot of an account's last
#: effective time, the region's next change point (us) or None, then a verdict or None per
#: capability, in SLOTS' order: a tuple, which costs less than a dict).
NowCells = tuple[Any, ...]
_NOW_AT = {cap: i + 2 for cap, i in SLOTS.items()}  # where a capability's verdict is in one
_NO_CELLS: dict[int, NowCells] = {}  # (never written: a route_via:R not yet kept)


def code_of(entry: Any) -> int | None:
    """The code an entry holds (None: facts not yet encoded)."""
    return entry if entry.__class__ is int else None


class CheckIndex:
    """Every account's compact timeline, its region's, and the decisions made from them."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.position = 0
        self.interner = Interner()
        self.store = Store(self.interner)
        # account -> Entry. An account is encoded on first use, so a fan-out or a catch-up
        # does not encode a million accounts at once.
        self.accounts: dict[str, Entry] = {}
        self.regions: dict[str, RegionLine] = {}
        self.cache_size = cache_size  # memoised cells kept (oldest evicted first)
        self._cells: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # see _decide
        self._not_yet: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # rule 7's, per account
        self._times: dict[Any, int] = {}  # `at` / `as_known_at` as given -> microseconds
        # template id -> its settled accounts' answers; "route_via:R" -> {template id: one}
        self._now: dict[Any, Any] = {}
        # The "now" decisions of the accounts checked last: one lookup in a small dict that
        # stays in the CPU's caches, and no Decision made (a bounded few, not one an account)
        self._hot: dict[str, Decision] = {}
        self._seen = 0  # a time (us) already past: an account whose times are all before it
        self._generation = 0
        self._lock = threading.Lock()
        self._adopt(self.store)

    def _adopt(self, store: Store) -> None:
        """Shortcuts into the store, read on every check."""
        self.store, self.interner = store, store.interner
        self._templates, self._array, self._cite = store.interner.templates, store.times, store.cite

    # -- updates -------------------------------------------------------------------------

    def update(self, facts: Any, changed: Changed) -> None:
        """Forget the timelines and answers of the streams that changed: regions are
        rebuilt now (few, shared), accounts on their next check. `facts`: LogFacts, or
        anything with the same `accounts`, `regions` and `position` (light_log.LightLog)."""
        regions = {c: RegionLine.of(region_timeline(c, facts.regions[c])) for c in changed.regions}
        accounts = {a: facts.accounts[a] for a in changed.accounts}
        with self._lock:
            self._generation += 1
            self.regions.update(regions)
            self.accounts.update(accounts)
            for a in accounts:
                self._hot.pop(a, None)
            self.position = facts.position
            if regions:  # a region changed: its answers now may have
                self._now.clear()
                self._hot.clear()

    def replace(
        self,
        accounts: dict[str, Any],
        regions: Mapping[str, RegionLine | Timeline[RegionState]],
        position: int,
        store: Store | None = None,
    ) -> None:
        """Adopt accounts (codes into `store`, or fact lists) and regions wholesale."""
        lines = {
            c: r if isinstance(r, RegionLine) else RegionLine.of(r) for c, r in regions.items()
        }
        with self._lock:
            self._generation += 1
            if store is not None:
                self._adopt(store)
            self.accounts, self.regions, self.position = accounts, lines, position
            _KNOWN.pop(self, None)  # new accounts: their regions are read again
            self._now.clear()
            self._hot.clear()
            self._cells.clear()
            self._not_yet.clear()

    def encode_all(self) -> None:
        """Encode every account not yet encoded (a snapshot writes codes, not facts)."""
        for account_id, entry in list(self.accounts.items()):
            if entry.__class__ is list:
                self._encode(account_id, entry)

    def _encode(self, account_id: str, facts: list[Fact]) -> int:
        template_id, times, who = self.interner.encode(facts)
        with self._lock:  # keep it only if no update came in meanwhile
            code = self.store.add(template_id, times, who)
            if self.accounts.get(account_id) is facts:
                self.accounts[account_id] = code
        return code

    def code(self, account_id: str) -> int:
        """The account's code, encoding it now if it was not yet."""
        entry = self.accounts.get(account_id)
        if entry is None:
            raise UnknownAccount(account_id)
        code = code_of(entry)
        return code if code is not None else self._encode(account_id, entry)  # type: ignore[arg-type]

    # -- what others read ----------------------------------------------------------------

    def facts(self, account_id: str) -> list[Fact]:
        """The account's events, in effective order, as Facts (built from the index)."""
        entry = self.accounts.get(account_id)
        if entry is None:
            raise UnknownAccount(account_id)
        code = code_of(entry)
        if code is None:
            return list(entry)  # type: ignore[arg-type]
        return self.store.facts(account_id, code)

    # -- checks --------------------------------------------------------------------------

    def check(
        self, account_id: str, capability: str, at: When = None, as_known_at: When = None
    ) -> Decision:
        if at is None and as_known_at is None:
            hot = self._hot.get(account_id)
            if (
                hot is not None
                and hot[1][0] == capability
                and (hot.__class__ is Decision or hot[5] > time())  # rule 9
            ):
                return hot
            return self._now_check(account_id, capability)
        times = self._times  # (T, K) in microseconds, each read once and remembered
        t = times.get(at) if at is not None else int(time() * 1e6)
        if t is None:
            t = self._us("at", at)  # type: ignore[arg-type]
        k = None
        if as_known_at is not None:
            k = times.get(as_known_at)
            if k is None:
                k = self._us("as_known_at", as_known_at)
        return self._check_at(account_id, capability, t, k)

    def _check_at(self, account_id: str, capability: str, t: int, k: int | None) -> Decision:
        """A check at effective time `t` as known at `k` (microseconds; None: everything
        recorded): the account's state found in its template's packed times, then the
        memoised cell for it, the region's state and the capability. Inlined, the region's
        remembered state too: this runs on every historical check."""
        entry: Any = self.accounts.get(account_id)
        code: int = entry if entry.__class__ is int else self.code(account_id)
        template = self._templates[code & MASK]
        offset = code >> SHIFT
        array = self._array
        # (one known time or one start, the usual case: a comparison instead of a bisect)
        if k is None:
            i = template.m - 1
        elif template.m == 1:
            i = 0 if array[offset + template.klo] <= k else -1
        else:
            start = offset + template.klo
            i = bisect_right(array, k, start, start + template.m) - start - 1
        shape = None
        if i >= 0:
            lo, hi, shapes = template.beliefs[i]
            if hi - lo == 1:
                j = 0 if array[offset + lo] <= t else -1
            else:
                j = bisect_right(array, t, offset + lo, offset + hi) - offset - lo - 1
            if j >= 0:
                shape = shapes[j]
                via = _VIA.get(capability)
                line = self.regions.get(template.region if via is None else via, EMPTY_LINE)
                region = line.fixed
                if region is None:
                    last = line.last  # the (T, K) last asked of this region, and its state
                    if last[0] == t and last[1] == k and last[2] is not None:
                        region = last[2]
                    else:
                        region = line.state_at(t, k)
                        line.last = (t, k, region)
                cell = self._cells.get((shape, region, capability))
                if cell is not None:
                    return _new(Decision, (account_id, cell, self.position, self._cite, code))
        region = _line(self.regions, template, capability).state_at(t, k)
        return self._decide(account_id, capability, code, template, shape, region)

    def capabilities(
        self, account_id: str, at: When = None, as_known_at: When = None
    ) -> list[Decision]:
        caps = all_capabilities(known_regions(self))
        return [self.check(account_id, cap, at, as_known_at) for cap in caps]

    def _decide(
        self,
        account_id: str,
        capability: str,
        code: int,
        template: Template,
        shape: AccountState | None,
        region: RegionState,
    ) -> Decision:
        """The memoised verdict for (shape, region state, capability), as this account's.
        Rule 7 (the registration not in force, or not yet known) names the registration's
        own times: its verdict is kept apart, under the account's code (unique in a store)."""
        rule_7 = shape is None or shape.registration is None
        key: tuple[Any, ...] = (  # shapes and region states hash by identity
            (code, _pending(template, shape), region, capability)
            if rule_7
            else (shape, region, capability)
        )
        cells, size = (self._not_yet, NOT_YET_SIZE) if rule_7 else (self._cells, self.cache_size)
        cell = cells.get(key)
        if cell is None:
            store = self.store
            if rule_7:
                index = key[1]
                pending = store.event(account_id, code, index) if index is not None else None
                shape = AccountState(not_yet=pending)
            v = decide(capability, shape, region)  # type: ignore[arg-type]
            refs = tuple(f.version if f.stream == "" else f for f in v.because)
            cell = (capability, v.allowed, v.value, v.reason, refs)  # a Decision's verdict
            with self._lock:  # kept only while `code` is still the account's in this store
                if store is self.store and self.accounts.get(account_id) == code:
                    _evict(cells, size)
                    cells[key] = cell
        return _new(Decision, (account_id, cell, self.position, self._cite, code))

    def _now_check(self, account_id: str, capability: str) -> Decision:
        """Now, for an account not among the last checked: its template's answer when its
        every effective time is past, else decided from the array."""
        generation = self._generation
        code: Any = self.accounts.get(account_id)
        if code.__class__ is int:
            i = _NOW_AT.get(capability)
            if i is None:  # route_via:R: its own cells per template (R's change points)
                now, i = self._now.get(capability, _NO_CELLS).get(code & MASK), 2
            else:
                now = self._now.get(code & MASK)
            if (
                now is not None
                and (cell := now[i]) is not None
                and self._array[(code >> SHIFT) + now[0]] <= self._seen
                and (now[1] is None or now[1] > time() * 1e6)  # rule 9
            ):
                decision = (account_id, cell, self.position, self._cite, code)
                if now[1] is None:
                    return self._keep_hot(generation, _new(Decision, decision))
                return self._keep_hot(generation, _new(_Now, (*decision, now[1] / 1e6)))
        return self._check_now(account_id, capability)

    def _check_now(self, account_id: str, capability: str) -> Decision:
        """Decide for now; an account whose every effective time is past gives its
        template's answer, kept for the others until the region's next change point."""
        generation = self._generation
        code = self.code(account_id)
        store = self.store
        template = store.interner.templates[code & MASK]
        offset = code >> SHIFT
        t = int(time() * 1e6)
        self._seen = max(self._seen, t)
        shape, change, settled = None, None, -1
        if template.beliefs:
            lo, hi, shapes = template.beliefs[-1]
            j = bisect_right(store.times, t, offset + lo, offset + hi) - offset - lo
            shape = shapes[j - 1] if j > 0 else None
            change = store.times[offset + lo + j] if lo + j < hi else None
            settled = hi - 1 if change is None else -1
        line = _line(self.regions, template, capability)
        decision = self._decide(
            account_id, capability, code, template, shape, line.state_at(t, None)
        )
        until = line.next_change(t)
        if settled >= 0 and shape is not None and shape.registration is not None:
            with self._lock:  # kept if nothing changed meanwhile
                if generation == self._generation:
                    _keep_now(self._now, code & MASK, (settled, until), capability, decision[1])
        changes = [c for c in (change, until) if c is not None]
        if changes:
            decision = _new(_Now, (*decision, min(changes) / 1e6))
        return self._keep_hot(generation, decision)

    def _keep_hot(self, generation: int, decision: Decision) -> Decision:
        """The decision, also kept among the last checked, if nothing changed meanwhile."""
        with self._lock:
            if generation == self._generation:
                hot = self._hot
                if len(hot) >= HOT_SIZE:  # keep the newer half (a dict whose oldest are
                    # deleted one at a time scans the deleted again at each deletion)
                    hot = self._hot = dict(islice(hot.items(), HOT_SIZE // 2, None))
                hot[decision[0]] = decision
        return decision

    def _us(self, field: str, value: datetime | str) -> int:
        us = to_us(aware(field, value))
        with self._lock:
            if len(self._times) >= 4096:
                self._times.clear()
            self._times[value] = us
        return us


def _line(regions: Mapping[str, RegionLine], template: Template, capability: str) -> RegionLine:
    """The line of the region a capability is answered from (the account's own, or R's for
    `route_via:R`, then remembered in _VIA); UnknownCapability for no capability."""
    check_capability(capability)
    via = route_via_region(capability)
    if via is not None:
        _VIA[capability] = via
    return regions.get(capability_region(capability, template.region), EMPTY_LINE)


#: Per index: (the accounts dict it read, how many of its entries, the regions found).
_KNOWN: WeakKeyDictionary[CheckIndex, tuple[int, int, frozenset[str]]] = WeakKeyDictionary()


def known_regions(index: CheckIndex) -> frozenset[str]:
    """The regions the store knows: those with events of their own, and the accounts'
    (an account's region never changes, and new accounts come last in the dict, so only
    the accounts added since the last call are read; under the writers' lock, briefly)."""
    accounts, templates = index.accounts, index.interner.templates
    kept = _KNOWN.get(index)
    if kept is None or kept[0] != id(accounts) or kept[1] > len(accounts):
        kept = (id(accounts), 0, frozenset())
    found = set(kept[2])
    with index._lock:  # the dict is not changed while its new part is read
        count = len(accounts)
        for entry in islice(accounts.values(), kept[1], None):
            if entry.__class__ is list:
                found.add(entry[0].data.get("region", "") if entry else "")
            else:
                found.add(templates[entry & MASK].region)  # type: ignore[operator]
    _KNOWN[index] = (id(accounts), count, frozenset(found))
    return frozenset(found | set(index.regions)) - {""}


def _pending(template: Template, shape: AccountState | None) -> int | None:
    """Rule 7's registration: the index of the account's event not yet in force (None:
    none is recorded as known)."""
    if shape is None:
        return template.first_registration
    return shape.not_yet.version if shape.not_yet is not None else None


def _evict(cache: dict[Any, Any], size: int) -> None:
    while len(cache) >= size:
        del cache[next(iter(cache))]


def _keep_now(
    now: dict[Any, Any],
    template_id: int,
    when: tuple[int, int | None],
    capability: str,
    verdict: tuple[Any, ...],
) -> None:
    """A template's "now" verdict for a capability, into `now` (`when`: the slot of its
    accounts' last effective time, the region's next change). Under the index's lock."""
    at = _NOW_AT.get(capability)
    if at is None:  # route_via:R: under its name, one verdict per template
        now.setdefault(capability, {})[template_id] = (*when, verdict)
        return
    kept = now.get(template_id)
    if kept is None or kept[:2] != when:
        kept = when + (None,) * len(SLOTS)
    now[template_id] = (*kept[:at], verdict, *kept[at + 1 :])
