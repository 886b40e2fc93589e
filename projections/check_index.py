"""The hot path: checks answered from a compact index in memory, never from the store.

Per account the index keeps one int: which *template* its timeline follows and where its
times start in one shared `array('q')` of microseconds. A template is everything about an
account's timeline but its times: the structure of its beliefs (known times, effective
starts, as slots into the account's times), the *shape* of each state, and its events
without their times. Accounts that differ only in their times (most of them: a
registration, maybe a rule-caused revocation) share one template, so the per-account cost
is one dict entry, one int and a few 8-byte times. No `Fact` is kept per account.

A shape is an `AccountState` whose facts are stand-ins (`stream == ""`, `version` = the
event's index in the account's events) carrying the data `decide` reads, so equal states
of different accounts are ONE object, and decisions are memoised per (shape, region state,
capability). A Decision cites stand-ins as indices; its `because` builds the account's real
Facts (times from the array) only when read.

- "now" (no `at`, no `as_known_at`): one dict lookup returns a ready Decision; an entry with
  a future change point carries its expiry and is checked against the clock, so a
  future-effective event takes effect on time with no new event recorded (rule 9).
- `at` / `as_known_at`: two bisects in the shared array, then the memoised verdict.

Updates come from `update(facts, changed)` (catch-up, follow, rebuild); an account is
encoded on its next check, not in the update. Readers take no lock; writers hold one, and a
generation counter keeps a check that raced an update from caching a stale answer.
"""

from __future__ import annotations

import json
import marshal
import math
import threading
from array import array
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from time import time
from typing import Any

from entitlements.commands import parse_time
from entitlements.decisions import Decision, UnknownAccount
from entitlements.rules import (
    CAPABILITIES,
    AccountState,
    Fact,
    RegionState,
    UnknownCapability,
    decide,
    fold_account,
)
from projections.facts import Changed
from projections.timeline import (
    EMPTY_REGION,
    Timeline,
    build_timeline,
    region_timeline,
)

CACHE_SIZE = 1 << 21  # memoised cells kept (oldest evicted first)
HOT_SIZE = 1 << 16  # "now" entries also kept in a small dict (oldest evicted first)
SLOTS = {cap: i for i, cap in enumerate(CAPABILITIES)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
SHIFT = 32  # code = offset << SHIFT | template id
MASK = (1 << SHIFT) - 1
_WHO = "\x00command_id"  # where a stand-in's data holds the account's own command_id
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


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """An account timeline without its times. Slots index the account's run of times in
    the shared array: known[i] = slot klo + i; belief i's starts are slots lo..hi."""

    region: str
    klo: int
    m: int  # number of known (recorded) times = beliefs
    beliefs: tuple[tuple[int, int, tuple[AccountState, ...]], ...]
    events: tuple[tuple[str, int, int, int, dict[str, Any], dict[str, Any] | None], ...]
    slots: int  # how many times an account of this template keeps
    first_registration: int | None  # event index of rule 7's "not yet" registration


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
    account of the process (and of the snapshots it loads)."""

    def __init__(self) -> None:
        self.templates: list[Template] = []
        self._template_ids: dict[Any, int] = {}
        self._values: dict[Any, Any] = {}  # a data/cause dict's items (or JSON) -> the one dict
        self._standins: dict[tuple[Any, ...], Fact] = {}
        self._shapes: dict[tuple[Any, ...], AccountState] = {}
        # events without times (as ranks of their times) -> (template id, rank of each slot)
        self._by_signature: dict[tuple[Any, ...], tuple[int, tuple[int, ...]]] = {}

    def signature(self, template_id: int, ranks: tuple[int, ...]) -> tuple[Any, ...]:
        """The signature an account of this template with these slot ranks has."""
        events = self.templates[template_id].events
        return tuple((ty, v, ranks[e], ranks[r], id(d), id(c)) for ty, v, e, r, d, c in events)

    def remember(self, template_id: int, ranks: tuple[int, ...]) -> None:
        """Take a (template, ranks) pair of a snapshot: accounts like it need no fold."""
        self._by_signature[self.signature(template_id, ranks)] = (template_id, ranks)

    def signatures(self) -> list[tuple[int, tuple[int, ...]]]:
        return list(self._by_signature.values())

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
            f = self._standins[key] = Fact("", type_, index, EPOCH, EPOCH, data, cause)
        return f

    def shape(self, state: AccountState) -> AccountState:
        key = tuple(
            id(v) if isinstance(v, Fact) else v for v in (getattr(state, n) for n in STATE_FIELDS)
        )
        return self._shapes.setdefault(key, state)

    def template(self, t: Template) -> int:
        key = (
            t.region,
            t.klo,
            t.m,
            tuple((lo, hi, tuple(map(id, shapes))) for lo, hi, shapes in t.beliefs),
            tuple((ty, v, e, r, id(d), id(c)) for ty, v, e, r, d, c in t.events),
            t.slots,
            t.first_registration,
        )
        i = self._template_ids.get(key)
        if i is None:
            i = self._template_ids[key] = len(self.templates)
            self.templates.append(t)
        return i

    # -- encoding an account's facts ------------------------------------------------------

    def encode(self, facts: Sequence[Fact]) -> tuple[int, list[int], tuple[str | None, ...]]:
        """(template id, the account's times for its slots, command_id per version)."""
        times = sorted({f.effective_at for f in facts} | {f.recorded_at for f in facts})
        rank = {t: i for i, t in enumerate(times)}
        who: tuple[str | None, ...] = ()
        if any(f.data.get("command_id") is not None for f in facts):
            who = tuple(f.data.get("command_id") for f in sorted(facts, key=lambda f: f.version))
        skeleton = [
            (
                f.type,
                f.version,
                rank[f.effective_at],
                rank[f.recorded_at],
                self.value(_without_who(f.data)),
                self.value(f.cause),  # type: ignore[arg-type]
            )
            for f in facts
        ]
        signature = tuple((ty, v, e, r, id(d), id(c)) for ty, v, e, r, d, c in skeleton)
        found = self._by_signature.get(signature)
        if found is None:
            found = self._by_signature[signature] = self._new_template(facts, skeleton, rank)
        template_id, slot_ranks = found
        return template_id, [to_us(times[r]) for r in slot_ranks], who

    def _new_template(
        self, facts: Sequence[Fact], skeleton: list[tuple[Any, ...]], rank: dict[datetime, int]
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
        registration = next((f for f in facts if f.type == "AccountRegistered"), None)
        template = Template(
            region=next((f.data["region"] for f in facts if f.type == "AccountRegistered"), ""),
            klo=klo,
            m=len(timeline.known),
            beliefs=tuple(beliefs),
            events=tuple(events),
            slots=len(slot_ranks),
            first_registration=index_of[id(registration)] if registration is not None else None,
        )
        return self.template(template), tuple(slot_ranks)


def _without_who(data: Any) -> dict[str, Any]:
    """An event's data with its command_id (one per command: never shared) left out."""
    if data.get("command_id") is None:
        return dict(data)
    return {k: (_WHO if k == "command_id" else v) for k, v in data.items()}


def _replace(state: AccountState, changes: dict[str, Any]) -> AccountState:
    return AccountState(**{n: changes.get(n, getattr(state, n)) for n in STATE_FIELDS})


class Store:
    """The times of every encoded account (append-only: a code stays valid for as long as
    a Decision holds the store) and the command_ids its events carry."""

    def __init__(self, interner: Interner) -> None:
        self.interner = interner
        self.times = array("q")
        self.who: dict[str, tuple[str | None, ...]] = {}  # only accounts that have any

    def add(self, account_id: str, template_id: int, times: list[int], who: tuple[Any, ...]) -> int:
        offset = len(self.times)
        self.times.extend(times)
        if any(c is not None for c in who):
            self.who[account_id] = who
        else:
            self.who.pop(account_id, None)
        return offset << SHIFT | template_id

    def event(self, account_id: str, code: int, index: int) -> Fact:
        """The account's event `index` (in effective order) as the Fact it was recorded as."""
        template = self.interner.templates[code & MASK]
        offset = code >> SHIFT
        ty, version, eff, rec, data, cause = template.events[index]
        if data.get("command_id") == _WHO:
            who = self.who.get(account_id, ())
            command_id = who[version - 1] if version <= len(who) else None
            data = {k: (command_id if v == _WHO else v) for k, v in data.items()}
        return Fact(
            f"account:{account_id}",
            ty,
            version,
            from_us(self.times[offset + eff]),
            from_us(self.times[offset + rec]),
            data,
            cause,
        )

    def facts(self, account_id: str, code: int) -> list[Fact]:
        template = self.interner.templates[code & MASK]
        return [self.event(account_id, code, i) for i in range(len(template.events))]

    def cite(self, refs: tuple[Any, ...], code: int, account_id: str) -> tuple[Fact, ...]:
        """A Decision's `because`: stand-ins (ints) become the account's real events."""
        return tuple(self.event(account_id, code, r) if r.__class__ is int else r for r in refs)


class _Caps(list):  # type: ignore[type-arg]
    """A "now" entry for several capabilities: [until (epoch s), code, one slot each]."""

    __slots__ = ()


#: What the index keeps per account: its code; its facts until first asked about; or, once
#: checked "now", the cached decision (holding the code), or a _Caps of several.
Entry = int | list[Fact] | Decision | _Caps


def code_of(entry: Any) -> int | None:
    """The code an entry holds (None: facts not yet encoded)."""
    cls = entry.__class__
    if cls is int:
        return entry  # type: ignore[no-any-return]
    if cls is Decision or cls is _Now:
        return entry[4]  # type: ignore[no-any-return]
    if cls is _Caps:
        return entry[1]  # type: ignore[no-any-return]
    return None


class CheckIndex:
    """Every account's compact timeline, its region's, and the decisions made from them."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self.position = 0
        self.interner = Interner()
        self.store = Store(self.interner)
        # account -> Entry. An account is encoded on first use, so a fan-out or a catch-up
        # does not encode a million accounts at once. Its "now" decision lives in the same
        # slot (no second dict): an update of the account replaces it.
        self.accounts: dict[str, Entry] = {}
        self.regions: dict[str, RegionLine] = {}
        self.cache_size = cache_size  # memoised cells kept (oldest evicted first)
        self._cells: dict[tuple[AccountState, RegionState, str], tuple[Any, ...]] = {}
        self._times: dict[Any, int] = {}  # `at` / `as_known_at` as given -> microseconds
        # The "now" entries of the accounts checked last, again: a lookup in a small dict
        # stays in the CPU's caches, one in a dict of a million accounts does not.
        self._hot: dict[str, Any] = {}
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
            if regions:
                self._forget_now()

    def _forget_now(self) -> None:
        """Every cached "now" decision back to its code (a region changed: O(accounts))."""
        self._hot.clear()
        accounts = self.accounts
        for a, entry in accounts.items():
            cls = entry.__class__
            if cls is not int and cls is not list:
                accounts[a] = code_of(entry)  # type: ignore[assignment]

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
            self._forget_now()
            self._cells.clear()

    def encode_all(self) -> None:
        """Encode every account not yet encoded (a snapshot writes codes, not facts)."""
        for account_id, entry in list(self.accounts.items()):
            if entry.__class__ is list:
                self._encode(account_id, entry)

    def _encode(self, account_id: str, facts: list[Fact]) -> int:
        template_id, times, who = self.interner.encode(facts)
        with self._lock:  # keep it only if no update came in meanwhile
            code = self.store.add(account_id, template_id, times, who)
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
        self,
        account_id: str,
        capability: str,
        at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
    ) -> Decision:
        if at is None and as_known_at is None:
            entry: Any = self._hot.get(account_id)
            if entry is None:
                entry = self.accounts.get(account_id)
            cls = entry.__class__
            if cls is Decision:  # nothing changes after now: valid until an update
                if entry[1][0] == capability:
                    return entry  # type: ignore[no-any-return]
            elif cls is _Now:
                if entry[1][0] == capability and entry[5] > time():  # rule 9
                    return entry  # type: ignore[no-any-return]
            elif cls is _Caps and entry[0] > time():
                i = SLOTS.get(capability)
                if i is not None and (decision := entry[i + 2]) is not None:
                    return decision  # type: ignore[no-any-return]
            return self._check_now(account_id, capability)
        # `at` / `as_known_at`, inlined: this runs on every historical check
        entry = self.accounts.get(account_id)
        cls = entry.__class__
        times = self._times
        t = times.get(at) if at is not None else int(time() * 1e6)
        if t is None:
            t = self._us("at", at)  # type: ignore[arg-type]
        k = None
        if as_known_at is not None:
            k = times.get(as_known_at)
            if k is None:
                k = self._us("as_known_at", as_known_at)
        if cls is int:
            code: int = entry
        else:
            code = self.code(account_id)
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
                line = self.regions.get(template.region, EMPTY_LINE)
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
        region = self.regions.get(template.region, EMPTY_LINE).state_at(t, k)
        return self._decide(account_id, capability, code, template, shape, region, None)

    def capabilities(
        self,
        account_id: str,
        at: datetime | str | None = None,
        as_known_at: datetime | str | None = None,
    ) -> list[Decision]:
        return [self.check(account_id, cap, at, as_known_at) for cap in CAPABILITIES]

    def _decide(
        self,
        account_id: str,
        capability: str,
        code: int,
        template: Template,
        shape: AccountState | None,
        region: RegionState,
        until: float | None,
    ) -> Decision:
        """The memoised verdict for (shape, region state, capability), as this account's."""
        if shape is None or shape.registration is None:
            return self._not_registered(account_id, capability, code, template, shape, region)
        key = (shape, region, capability)  # shapes and region states hash by identity
        cell = self._cells.get(key)
        if cell is None:
            if capability not in SLOTS:
                raise UnknownCapability(capability)
            v = decide(capability, shape, region)
            refs = tuple(f.version if f.stream == "" else f for f in v.because)
            cell = (capability, v.allowed, v.value, v.reason, refs)  # a Decision's verdict
            with self._lock:
                self._evict(self._cells)
                self._cells[key] = cell
        if until is None or until == math.inf:
            return _new(Decision, (account_id, cell, self.position, self._cite, code))
        return _new(_Now, (account_id, cell, self.position, self._cite, code, until))

    def _not_registered(
        self,
        account_id: str,
        capability: str,
        code: int,
        template: Template,
        shape: AccountState | None,
        region: RegionState,
    ) -> Decision:
        """Rule 7: the registration is not in force, or not yet known. Its reason names the
        registration's own times, so this one is decided for the account, not memoised."""
        if shape is not None:
            index = shape.not_yet.version if shape.not_yet is not None else None
        else:
            index = template.first_registration
        pending = self.store.event(account_id, code, index) if index is not None else None
        v = decide(capability, AccountState(not_yet=pending), region)
        return Decision.of(account_id, capability, v, self.position)

    def _check_now(self, account_id: str, capability: str) -> Decision:
        """Decide for now, and keep it until the account's or region's next change point."""
        if capability not in SLOTS:
            raise UnknownCapability(capability)
        generation = self._generation
        entry = self.accounts.get(account_id)
        code = self.code(account_id)
        store = self.store
        template = store.interner.templates[code & MASK]
        offset = code >> SHIFT
        t = int(time() * 1e6)
        shape, change = None, None
        if template.beliefs:
            lo, hi, shapes = template.beliefs[-1]
            j = bisect_right(store.times, t, offset + lo, offset + hi) - offset - lo
            shape = shapes[j - 1] if j > 0 else None
            change = store.times[offset + lo + j] if lo + j < hi else None
        line = self.regions.get(template.region, EMPTY_LINE)
        changes = [c for c in (change, line.next_change(t)) if c is not None]
        until = min(changes) / 1e6 if changes else math.inf
        decision = self._decide(
            account_id, capability, code, template, shape, line.state_at(t, None), until
        )
        with self._lock:  # keep it only if nothing changed meanwhile
            if generation != self._generation:
                return decision
            current: Any = self.accounts.get(account_id)
            if current is not entry and code_of(current) != code:
                return decision
            cls = current.__class__
            if cls is _Caps and current[0] == until:
                current[SLOTS[capability] + 2] = decision
            elif (cls is Decision or cls is _Now) and _until(current) == until:
                caps = _Caps([until, code] + [None] * len(SLOTS))  # a second capability
                caps[SLOTS[current[1][0]] + 2] = current
                caps[SLOTS[capability] + 2] = decision
                self.accounts[account_id] = self._keep_hot(account_id, caps)
            else:
                self.accounts[account_id] = self._keep_hot(account_id, decision)
        return decision

    def _keep_hot(self, account_id: str, entry: Any) -> Any:
        """Also in the small dict of the accounts checked last (under the lock)."""
        hot = self._hot
        if len(hot) >= HOT_SIZE:
            del hot[next(iter(hot))]
        hot[account_id] = entry
        return entry

    def _us(self, field: str, value: datetime | str) -> int:
        us = to_us(_utc(field, value))
        with self._lock:
            if len(self._times) >= 4096:
                self._times.clear()
            self._times[value] = us
        return us

    def _evict(self, cache: dict[Any, Any]) -> None:
        while len(cache) >= self.cache_size:
            del cache[next(iter(cache))]


def _until(entry: Any) -> float:
    return entry[5] if entry.__class__ is _Now else math.inf


def _utc(field: str, value: datetime | str) -> datetime:
    """Aware datetimes pass as they are; strings and naive datetimes are read as UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    try:
        return parse_time(value)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None
