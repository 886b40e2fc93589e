"""Bitemporal timelines: a stream's state at every (effective time T, known time K).

A timeline is a list of *beliefs*, one for each recorded time at which something was
learned; each belief is a step function of effective time. `state_at(T, K)` is two
bisects. (The SQL read models' rows come from projections/state_intervals.py.)
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from entitlements.domain.rules import (
    AccountState,
    Fact,
    RegionState,
    fold_account,
    fold_region,
)

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Belief(Generic[S]):
    """What was believed from one recorded time on: the state from each effective start."""

    starts: tuple[datetime, ...]
    states: tuple[S, ...]


@dataclass(frozen=True, slots=True)
class Timeline(Generic[S]):
    """beliefs[i] holds from known[i] until known[i + 1]; before anything is in force (or
    known) the state is `before`, or, when that is None, `make_before(self)` (accounts build
    it on demand from their registration rather than keep one per account)."""

    known: tuple[datetime, ...]
    beliefs: tuple[Belief[S], ...]
    before: S | None
    make_before: Callable[[Timeline[S]], S] | None = None

    def belief(self, known: datetime | None = None) -> Belief[S] | None:
        i = len(self.known) - 1 if known is None else bisect_right(self.known, known) - 1
        return self.beliefs[i] if i >= 0 else None

    def state_at(self, at: datetime, known: datetime | None = None) -> S:
        # belief() is inlined here: this runs on every `at` / `as_known_at` check.
        if known is None:
            b = self.beliefs[-1] if self.beliefs else None
        else:
            i = bisect_right(self.known, known) - 1
            b = self.beliefs[i] if i >= 0 else None
        j = bisect_right(b.starts, at) - 1 if b is not None else -1
        if j >= 0:
            return b.states[j]  # type: ignore[union-attr]
        if self.before is not None or self.make_before is None:
            return self.before  # type: ignore[return-value]
        return self.make_before(self)

    def next_change(self, after: datetime) -> datetime | None:
        """The first effective time after `after` at which the latest belief changes."""
        b = self.belief()
        if b is None:
            return None
        j = bisect_right(b.starts, after)
        return b.starts[j] if j < len(b.starts) else None


def build_timeline(
    facts: Sequence[Fact],
    fold: Callable[[Sequence[Fact], datetime, datetime], S],
    before: S | None,
    make_before: Callable[[Timeline[S]], S] | None = None,
) -> Timeline[S]:
    """Fold the facts at every (effective point, recorded time) where anything changes."""
    known = sorted({f.recorded_at for f in facts})
    beliefs = []
    seen: list[S] = []  # equal states share one object across beliefs (memory, memo hits)
    for k in known:
        starts: list[datetime] = []
        states: list[S] = []
        for t in sorted({f.effective_at for f in facts if f.recorded_at <= k}):
            state = fold(facts, t, k)
            if not states or not state.same_as(states[-1]):  # type: ignore[attr-defined]
                state = next((s for s in seen if s.same_as(state)), state)  # type: ignore[attr-defined]
                if not any(s is state for s in seen):
                    seen.append(state)
                starts.append(t)
                states.append(state)
        beliefs.append(Belief(tuple(starts), tuple(states)))
    return Timeline(tuple(known), tuple(beliefs), before, make_before)


def _not_registered(timeline: Timeline[AccountState]) -> AccountState:
    """Rule 7's state: the registration exists but is not in force, or not yet known."""
    first = (
        timeline.beliefs[0].states[0] if timeline.beliefs and timeline.beliefs[0].states else None
    )
    return AccountState(not_yet=first.registration if first else None)


def account_timeline(facts: Sequence[Fact]) -> Timeline[AccountState]:
    return build_timeline(facts, fold_account, None, _not_registered)


def region_timeline(code: str, facts: Sequence[Fact]) -> Timeline[RegionState]:
    return build_timeline(facts, lambda fs, t, k: fold_region(code, fs, t, k), RegionState(code))


EMPTY_REGION: Timeline[RegionState] = Timeline((), (), RegionState(""))
