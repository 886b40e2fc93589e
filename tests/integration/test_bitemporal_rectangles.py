"""The bitemporal rectangles `explain --png` draws (audit.bitemporal), on the china-2020
store, SQLite and PostgreSQL: each rectangle's answer is what `engine.check` answers at
points inside it (its corners, its middle, far out along an open end), the rectangles tile
the plane, and equal neighbours are merged."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from entitlements import open_engine
from entitlements.application import audit
from entitlements.application.engine import Engine
from entitlements.domain.bitemporal import Rectangle, find
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.rules import CAPABILITIES, UnknownCapability
from tests.conftest import china_store

ACCOUNTS = (
    "cn-ent-02",
    "cn-free-01",
    "cn-free-02",
    "cn-pro-01",
    "cn-ent-01",
    "us-pro-01",
    "us-tight-01",
)
#: An account whose events lie microseconds and hours apart, each clock ahead of the other.
TIGHT = [
    {"command": "register_account", "account_id": "us-tight-01", "region": "US", "plan": "pro"}
    | {"channel": "online", "effective_at": "2021-03-01T10:00", "recorded_at": "2021-03-01T10:00"},
    {"command": "revoke_hosting", "account_id": "us-tight-01", "reason": "one"}
    | {"effective_at": "2021-03-01T10:00:00.000001", "recorded_at": "2021-03-01T10:00:00.000002"},
    {"command": "restore_hosting", "account_id": "us-tight-01", "reason": "two"}
    | {"effective_at": "2021-03-01T12:00", "recorded_at": "2021-03-01T11:00"},
    {"command": "suspend_account", "account_id": "us-tight-01", "jurisdiction": "platform"}
    | {"reason": "three", "effective_at": "2021-03-01T10:30", "recorded_at": "2021-03-01T13:00"},
]
TINY = timedelta(microseconds=1)
FAR = timedelta(days=400)  # out along an open end


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def china(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One china-2020 store of each kind for the whole module: these tests only read."""
    folder = tmp_path_factory.mktemp("rectangles")
    with china_store(request.param, folder) as url, open_engine(url) as engine:
        assert {r.status for r in engine.apply(TIGHT)} == {"applied"}
        yield engine


def points_inside(r: Rectangle) -> list[tuple[datetime, datetime]]:
    """The four corners (an end is exclusive: a microsecond before it), the middle, and far
    out along any open end."""

    def span(start: datetime | None, end: datetime | None) -> list[datetime]:
        lo = start if start is not None else (end or datetime(2020, 1, 1, tzinfo=UTC)) - FAR
        hi = end - TINY if end is not None else lo + FAR
        return [lo, lo + (hi - lo) / 2, hi]

    across = span(r.effective_from, r.effective_to)
    up = span(r.recorded_from, r.recorded_to)
    return [(t, k) for t in across for k in up]


def answer_of(r: Rectangle) -> tuple[object, ...]:
    return (r.allowed, r.value, r.reason, [f.ref() for f in r.because])


@pytest.mark.parametrize("account", ACCOUNTS)
def test_every_rectangle_answers_as_check_does_inside_it(china: Engine, account: str) -> None:
    for capability in CAPABILITIES:
        rects = audit.bitemporal(china, account, capability)
        assert rects
        for r in rects:
            for at, known in points_inside(r):
                d = china.check(account, capability, at=at, as_known_at=known)
                got = (d.allowed, d.value, d.reason, [f.ref() for f in d.because])
                assert got == answer_of(r), (capability, at, known, r.as_dict())
            if r.recorded_to is None:  # the top band is what check says with everything known
                d = china.check(account, capability, at=points_inside(r)[0][0])
                assert (d.allowed, d.value, d.reason) == answer_of(r)[:3]


def test_the_rectangles_tile_the_plane(china: Engine) -> None:
    """Any (T, K) lies in exactly one rectangle (`find` insists), and it answers as check:
    random points over 2019-2021, and the rectangles' edges and a microsecond before."""
    rng = random.Random(10)
    start = datetime(2019, 1, 1, tzinfo=UTC)
    for account in ("cn-ent-02", "cn-free-02", "us-tight-01"):
        for capability in ("host", "max_participants", "purchase_via_partner"):
            rects = audit.bitemporal(china, account, capability)
            edges = {
                t
                for r in rects
                for t in (r.effective_from, r.effective_to, r.recorded_from, r.recorded_to)
                if t is not None
            }
            times = sorted(edges | {t - TINY for t in edges})
            points = [(t, k) for t in times for k in times]
            points += [
                (
                    start + timedelta(days=rng.uniform(0, 1100)),
                    start + timedelta(days=rng.uniform(0, 1100)),
                )
                for _ in range(60)
            ]
            for at, known in points:
                r = find(rects, at, known)
                d = china.check(account, capability, at=at, as_known_at=known)
                assert (d.allowed, d.value, d.reason) == answer_of(r)[:3], (at, known)


def test_equal_neighbours_are_merged(china: Engine) -> None:
    """No two rectangles with the same answer share a whole edge: they would be one."""
    for account in ACCOUNTS:
        for capability in CAPABILITIES:
            rects = audit.bitemporal(china, account, capability)
            for a in rects:
                for b in rects:
                    if a is b or answer_of(a) != answer_of(b):
                        continue
                    side_by_side = a.effective_to == b.effective_from is not None and (
                        a.recorded_from,
                        a.recorded_to,
                    ) == (b.recorded_from, b.recorded_to)
                    stacked = a.recorded_to == b.recorded_from is not None and (
                        a.effective_from,
                        a.effective_to,
                    ) == (b.effective_from, b.effective_to)
                    assert not (side_by_side or stacked), (a.as_dict(), b.as_dict())


def test_the_backdated_revocation_is_a_corner_recorded_on_1_november(china: Engine) -> None:
    """cn-ent-02's hosting: allowed at 1 Oct as known on 20 Oct, not as known now; the
    revocation's rectangle starts at 15 Sep across and 1 Nov up."""
    rects = audit.bitemporal(china, "cn-ent-02", "host")
    oct_1, oct_20 = datetime(2020, 10, 1, tzinfo=UTC), datetime(2020, 10, 20, tzinfo=UTC)
    assert find(rects, oct_1, oct_20).allowed
    revoked = find(rects, oct_1, datetime(2021, 1, 1, tzinfo=UTC))
    assert not revoked.allowed
    assert (revoked.effective_from, revoked.recorded_from) == (
        datetime(2020, 9, 15, tzinfo=UTC),
        datetime(2020, 11, 1, tzinfo=UTC),
    )
    assert (revoked.effective_to, revoked.recorded_to) == (None, None)
    assert [f.type for f in revoked.because] == ["HostingRevoked"]


def test_the_rectangles_are_the_same_each_time_and_ordered(china: Engine) -> None:
    first = [r.as_dict() for r in audit.bitemporal(china, "cn-pro-01", "max_participants")]
    assert first == [r.as_dict() for r in audit.bitemporal(china, "cn-pro-01", "max_participants")]
    rects = audit.bitemporal(china, "cn-pro-01", "max_participants")
    keys = [
        (r.recorded_from is not None, r.recorded_from or datetime.min.replace(tzinfo=UTC))
        for r in rects
    ]
    assert all(a <= b for a, b in pairwise(keys))


def test_unknown_accounts_and_capabilities_are_refused(china: Engine) -> None:
    with pytest.raises(UnknownAccount):
        audit.bitemporal(china, "nobody", "host")
    with pytest.raises(UnknownCapability):
        audit.bitemporal(china, "cn-ent-02", "fly")
    with pytest.raises(UnknownAccount):
        audit.bitemporal(china, "nobody", "fly")  # the account first, as check does
