"""Who-can: the reverse lookup over the check index, one page at a time.

A region's accounts are kept sorted by id beside the index (`RegionLists`), so a page is a
bisect to the cursor's last id and a walk forward; each account is decided by
`CheckIndex.check` itself (the decision listed is the one `check` gives, memoised cells
and all), at an explicit (T, K) in microseconds: the caller pins both, so page 2 asks the
very question page 1 asked. An account first recorded after K is not of the region yet
and is skipped (its check would answer "not yet known", but it did not exist at K).
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

from entitlements.domain.rules import AccountState, decide
from projections.check_index import EMPTY_LINE, MASK, SHIFT, CheckIndex, from_us


class Row(NamedTuple):
    """One listed account: its plan at (T, K) (None: not registered then) and its answer."""

    account_id: str
    plan: str | None
    allowed: bool
    value: int | None

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


class RegionLists:
    """Every region's account ids, sorted, for one index. Built once (every account's region
    from its template, encoding those not yet encoded), then kept up: the index's accounts
    dict only grows, in insertion order, so the ids past the count seen are the new ones;
    a dict replaced wholesale (a snapshot, a rebuild) is read again whole."""

    def __init__(self) -> None:
        self._accounts: dict[str, Any] | None = None
        self._seen = 0
        self._by_region: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def of(self, index: CheckIndex, region: str) -> list[str] | None:
        """The region's ids, sorted (None: no account of the region). The caller holds the
        projector's lock, so the accounts dict stands still while it is read."""
        with self._lock:
            accounts = index.accounts
            if accounts is not self._accounts:
                self._accounts, self._seen, self._by_region = accounts, 0, {}
            if len(accounts) > self._seen:
                new = list(islice(accounts, self._seen, None))
                self._add(index, new, bulk=self._seen == 0)
                self._seen = len(accounts)
            return self._by_region.get(region)

    def _add(self, index: CheckIndex, ids: list[str], bulk: bool) -> None:
        templates = index.interner.templates
        by_region = self._by_region
        for account_id in ids:
            region = templates[index.code(account_id) & MASK].region
            listed = by_region.get(region)
            if listed is None:
                by_region[region] = [account_id]
            elif bulk:
                listed.append(account_id)
            else:
                insort(listed, account_id)
        if bulk:
            for listed in by_region.values():
                listed.sort()


_LISTS: weakref.WeakKeyDictionary[CheckIndex, RegionLists] = weakref.WeakKeyDictionary()
_LISTS_LOCK = threading.Lock()


def region_lists(index: CheckIndex) -> RegionLists:
    """The lists kept beside `index` (made on first use; they go with it)."""
    with _LISTS_LOCK:
        lists = _LISTS.get(index)
        if lists is None:
            lists = _LISTS[index] = RegionLists()
        return lists


def first_known(index: CheckIndex, code: int) -> int:
    """When the account's first event was recorded (us): the first of its known times."""
    template = index.interner.templates[code & MASK]
    return index.store.times[(code >> SHIFT) + template.klo]


def plan_at(index: CheckIndex, code: int, t: int, k: int) -> str | None:
    """The account's plan at effective time `t` as known at `k` (us), as `check` finds its
    state (the same bisects in the packed times); None when it is not registered then."""
    template = index.interner.templates[code & MASK]
    offset, times = code >> SHIFT, index.store.times
    start = offset + template.klo
    i = bisect_right(times, k, start, start + template.m) - start - 1
    if i < 0:
        return None
    lo, hi, shapes = template.beliefs[i]
    j = bisect_right(times, t, offset + lo, offset + hi) - offset - lo - 1
    if j < 0 or shapes[j].registration is None:
        return None
    return shapes[j].plan


@dataclass(frozen=True, slots=True)
class Question:
    """What a page asks: pinned times in microseconds, `after` the last id already listed."""

    capability: str
    region: str
    plan: str | None
    t: int
    k: int
    denied: bool = False


def candidates(index: CheckIndex, q: Question, after: str | None) -> Iterator[Row]:
    """The region's accounts past `after`, in id order, that answer as asked. Raises
    LookupError when the region has no account. An account not registered at (T, K) gets
    rule 7's verdict, worked out once (`decide` with no registration, the region's state):
    `check` would decide each such account alone (its reason names its own registration),
    for the same allowed and value."""
    ids = region_lists(index).of(index, q.region)
    if ids is None:
        raise LookupError(q.region)
    at, known = from_us(q.t), from_us(q.k)
    region = index.regions.get(q.region, EMPTY_LINE).state_at(q.t, q.k)
    unregistered = decide(q.capability, AccountState(), region)
    wanted = not q.denied
    start = bisect_right(ids, after) if after is not None else 0
    for n in range(start, len(ids)):
        account_id = ids[n]
        code = index.code(account_id)
        if first_known(index, code) > q.k:
            continue  # not recorded yet at K: not one of the region's accounts then
        plan = plan_at(index, code, q.t, q.k)
        if plan is None:
            allowed, value = unregistered.allowed, unregistered.value
        else:
            d = index.check(account_id, q.capability, at, known)
            allowed, value = d.allowed, d.value
        if bool(allowed) != wanted or q.plan is not None and plan != q.plan:
            continue
        yield Row(account_id, plan, allowed, value)


def page(index: CheckIndex, q: Question, after: str | None, limit: int) -> tuple[list[Row], bool]:
    """Up to `limit` rows past `after`, and whether more may follow."""
    rows = list(islice(candidates(index, q, after), limit + 1))
    return rows[:limit], len(rows) > limit
