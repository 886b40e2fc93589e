"""Where two histories of one account give different answers: every capability, over
effective time, as known at one recorded time.

    answer_changes(account_id, before, after, start, end, known)

`what-if` (entitlements/application/what_if.py) compares the log as it is with the log and
the hypothetical commands. The answer can only change where an event takes effect, so
each history's effective times cut the window into pieces; each piece is decided once in
each history by the domain's own rules (`fold_account`, `fold_region`, `decide`, as `check`
decides), for every capability, and neighbouring pieces with the same pair of answers are
merged. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from entitlements.domain.rules import (
    CAPABILITIES,
    AccountState,
    Fact,
    RegionState,
    decide,
    fold_account,
    fold_region,
)
from entitlements.domain.times import iso

#: (allowed, value): what a check answers, as the what-if compares it.
Answer = tuple[bool, int | None]


@dataclass(frozen=True, slots=True)
class History:
    """One account's facts and its region's, in `Fact.order` (as the log keeps them)."""

    region: str
    account_facts: Sequence[Fact]
    region_facts: Sequence[Fact]


@dataclass(frozen=True, slots=True)
class AnswerChange:
    """One capability answering otherwise over [start, end) (end None: no end on file)."""

    account_id: str
    capability: str
    start: datetime
    end: datetime | None
    before: Answer
    after: Answer
    plan: str  # the account's plan at `start` (before, else after): the summary's key
    region: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "capability": self.capability,
            "from": iso(self.start),
            "to": iso(self.end) if self.end is not None else None,
            "before": {"allowed": self.before[0], "value": self.before[1]},
            "after": {"allowed": self.after[0], "value": self.after[1]},
        }


def _cuts(
    histories: Sequence[History], start: datetime | None, end: datetime | None
) -> list[datetime]:
    """The window's start (None: the first effective time on file; before it nothing is in
    force in either history) and every effective time inside it where either one moves."""
    every = {f.effective_at for h in histories for f in (*h.account_facts, *h.region_facts)}
    if start is None:
        if not every:
            return []
        start = min(every)
    if end is not None and end <= start:
        return []
    return [start, *sorted(t for t in every if start < t and (end is None or t < end))]


def _answers(account: AccountState, region: RegionState) -> list[Answer]:
    """Every capability's answer for these states."""
    answers = []
    for capability in CAPABILITIES:
        v = decide(capability, account, region)
        answers.append((v.allowed, v.value))
    return answers


def _states(
    before: History, after: History, at: datetime, known: datetime | None, same: tuple[bool, bool]
) -> tuple[AccountState, RegionState, AccountState, RegionState]:
    """Both histories' states at `at` as known at `known`; a side whose facts are the same
    in both is folded once."""
    account_b = fold_account(before.account_facts, at, known)
    region_b = fold_region(before.region, before.region_facts, at, known)
    account_a = account_b if same[0] else fold_account(after.account_facts, at, known)
    region_a = region_b if same[1] else fold_region(after.region, after.region_facts, at, known)
    return account_b, region_b, account_a, region_a


def answer_changes(
    account_id: str,
    before: History,
    after: History,
    start: datetime | None,
    end: datetime | None,
    known: datetime | None = None,
) -> list[AnswerChange]:
    """Every capability's answer over [start, end) in both histories, as known at `known`
    (None: all that is on file), where they differ: merged runs, in capability order.
    `start` None: since the first effective time on file."""
    cuts = _cuts((before, after), start, end)
    bounds = [*cuts[1:], end]
    # capability index -> the run being grown: (start, end, before, after, plan)
    runs: dict[int, list[tuple[datetime, datetime | None, Answer, Answer, str]]] = {}
    same = (
        before.account_facts == after.account_facts,
        before.region == after.region and before.region_facts == after.region_facts,
    )
    for at, until in zip(cuts, bounds, strict=True):
        account_b, region_b, account_a, region_a = _states(before, after, at, known, same)
        if account_b.same_as(account_a) and region_b.same_as(region_a):
            continue  # the same states: the same answers (decide reads nothing else)
        b, a = _answers(account_b, region_b), _answers(account_a, region_a)
        plan = account_b.plan if account_b.registration is not None else account_a.plan
        for i, (x, y) in enumerate(zip(b, a, strict=True)):
            if x == y:
                continue
            mine = runs.setdefault(i, [])
            last = mine[-1] if mine else None
            if last is not None and last[1] == at and last[2:4] == (x, y):
                mine[-1] = (last[0], until, x, y, last[4])
            else:
                mine.append((at, until, x, y, plan))
    region = after.region or before.region
    return [
        AnswerChange(account_id, CAPABILITIES[i], s, e, x, y, plan, region)
        for i in sorted(runs)
        for s, e, x, y, plan in runs[i]
    ]


def summary(changes: Sequence[AnswerChange]) -> dict[str, dict[str, dict[str, int]]]:
    """Per region and plan: accounts whose answers change, and the changes that take a
    capability away (`lost`), give one (`gained`), or change only its limit (`changed`)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    accounts: dict[tuple[str, str], set[str]] = {}
    for c in changes:
        row = out.setdefault(c.region, {}).setdefault(
            c.plan, {"accounts": 0, "lost": 0, "gained": 0, "changed": 0}
        )
        kind = (
            "lost"
            if c.before[0] and not c.after[0]
            else "gained"
            if c.after[0] and not c.before[0]
            else "changed"
        )
        row[kind] += 1
        accounts.setdefault((c.region, c.plan), set()).add(c.account_id)
    for (region, plan), ids in accounts.items():
        out[region][plan]["accounts"] = len(ids)
    return {r: dict(sorted(plans.items())) for r, plans in sorted(out.items())}
