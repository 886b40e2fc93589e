"""The bitemporal rectangles of one account and one capability: where on the plane of
effective time (across) and recorded time (up) the answer stays the same.

    rectangles("host", account_facts, "CN", region_facts)   # tiles the whole plane

The answer can only change where an event on file takes effect (across) or was recorded
(up), so those times cut the plane into cells; each cell is decided once by the domain's own
rules (`fold_account`, `fold_region`, `decide`, as `check` decides), and neighbours with the
same answer are merged: first along effective time within each band of recorded time, then
bands whose runs line up. Pure, no I/O: the auditors' door (`audit.bitemporal`) reads the
facts from the log, and pictures.py draws the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from entitlements.domain.rules import Fact, Verdict, decide, fold_account, fold_region
from entitlements.domain.times import iso

_TINY = timedelta(microseconds=1)
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # a point for a plane with no cut at all

#: (start, end) of one strip of an axis; None: open (since always, no end on file).
Strip = tuple[datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class Rectangle:
    """One answer over [effective_from, effective_to) x [recorded_from, recorded_to).
    None is an open end: since always, or no end on file. `registered` is False where rule
    7 answers (the registration not in force or not yet known there)."""

    effective_from: datetime | None
    effective_to: datetime | None
    recorded_from: datetime | None
    recorded_to: datetime | None
    allowed: bool
    value: int | None
    reason: str
    because: tuple[Fact, ...]
    registered: bool

    def contains(self, at: datetime, known: datetime) -> bool:
        return _within(at, self.effective_from, self.effective_to) and _within(
            known, self.recorded_from, self.recorded_to
        )

    def as_dict(self) -> dict[str, Any]:
        def t(x: datetime | None) -> str | None:
            return iso(x) if x is not None else None

        return {
            "effective_from": t(self.effective_from),
            "effective_to": t(self.effective_to),
            "recorded_from": t(self.recorded_from),
            "recorded_to": t(self.recorded_to),
            "allowed": self.allowed,
            "value": self.value,
            "reason": self.reason,
            "because": [f.ref() for f in self.because],
            "registered": self.registered,
        }


def _within(t: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or start <= t) and (end is None or t < end)


def strips(times: set[datetime]) -> list[Strip]:
    """An axis cut at `times`: (None, t0), [t0, t1), ..., [tn, None)."""
    edges: list[datetime | None] = [None, *sorted(times), None]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _inside(strip: Strip) -> datetime:
    """A time inside the strip: its start (facts taking effect or recorded exactly then
    count from then on), or just before its end for the open first strip."""
    start, end = strip
    if start is not None:
        return start
    return end - _TINY if end is not None else _NO_TIME


def _key(v: Verdict, registered: bool) -> tuple[Any, ...]:
    """What makes two cells the same answer: the decision and the events it cites."""
    return (
        v.allowed,
        v.value,
        v.reason,
        tuple((f.stream, f.version) for f in v.because),
        registered,
    )


def rectangles(
    capability: str,
    account_facts: Sequence[Fact],
    region: str,
    region_facts: Sequence[Fact],
) -> list[Rectangle]:
    """Rectangles tiling the whole plane, each with one answer; ordered by recorded, then
    effective start (open starts first). Facts in `Fact.order`, as the aggregates keep them."""
    facts = (*account_facts, *region_facts)
    across = strips({f.effective_at for f in facts})
    up = strips({f.recorded_at for f in facts})
    done: list[Rectangle] = []
    # A run of cells along effective time, open upward: (first strip, last strip, key) ->
    # (recorded start, verdict, registered).
    growing: dict[tuple[int, int, tuple[Any, ...]], tuple[datetime | None, Verdict, bool]] = {}

    def close(
        run: tuple[int, int, tuple[Any, ...]],
        start: tuple[datetime | None, Verdict, bool],
        recorded_to: datetime | None,
    ) -> None:
        first, last, _ = run
        recorded_from, v, registered = start
        done.append(
            Rectangle(
                across[first][0],
                across[last][1],
                recorded_from,
                recorded_to,
                v.allowed,
                v.value,
                v.reason,
                v.because,
                registered,
            )
        )

    for band in up:
        known = _inside(band)
        runs: list[tuple[int, int, tuple[Any, ...], Verdict, bool]] = []
        for i, strip in enumerate(across):
            at = _inside(strip)
            account = fold_account(account_facts, at, known)
            registered = account.registration is not None
            v = decide(capability, account, fold_region(region, region_facts, at, known))
            key = _key(v, registered)
            if runs and runs[-1][2] == key:
                runs[-1] = (runs[-1][0], i, key, runs[-1][3], registered)
            else:
                runs.append((i, i, key, v, registered))
        still: dict[tuple[int, int, tuple[Any, ...]], tuple[datetime | None, Verdict, bool]] = {}
        for first, last, key, v, registered in runs:
            run = (first, last, key)
            still[run] = growing.pop(run, (band[0], v, registered))
        for run, start in growing.items():  # runs this band does not continue end here
            close(run, start, band[0])
        growing = still
    for run, start in growing.items():
        close(run, start, None)
    done.sort(key=lambda r: (_sortable(r.recorded_from), _sortable(r.effective_from)))
    return done


def _sortable(t: datetime | None) -> tuple[bool, datetime]:
    return (t is not None, t or _NO_TIME)


def find(rects: Sequence[Rectangle], at: datetime, known: datetime) -> Rectangle:
    """The rectangle holding (at, known): exactly one, since they tile the plane."""
    (hit,) = (r for r in rects if r.contains(at, known))
    return hit


def deciding_events(rects: Sequence[Rectangle]) -> list[Fact]:
    """Every event some rectangle's answer cites, once, in (effective, recorded) order."""
    seen: dict[tuple[str, int], Fact] = {}
    for r in rects:
        for f in r.because:
            seen.setdefault((f.stream, f.version), f)
    return sorted(seen.values(), key=lambda f: (f.effective_at, f.recorded_at, f.stream, f.version))
