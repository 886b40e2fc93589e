"""The hot check path against its floor, in the same run.

Each round checks a batch of accounts drawn from the whole world (random order, so the
index's memory is really visited); `per_check_ns` in extra_info is round time / batch.
Floor: a plain function returning a precomputed frozen object from a dict of the batch's
accounts; also the same floor over a dict of every account (a lookup among a million keys).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks.synthetic import REGIONS
from entitlements.application.engine import Engine

BATCH = 10_000
AT = datetime(2020, 6, 1, tzinfo=UTC)
KNOWN = datetime(2020, 5, 1, tzinfo=UTC)
EARLY = datetime(2000, 1, 1, tzinfo=UTC)  # before every account's registration


def _batch(ids: list[str]) -> list[str]:
    return (ids * (BATCH // len(ids) + 1))[:BATCH]


def _run(benchmark: Any, fn: Callable[[list[str]], None], batch: list[str]) -> None:
    benchmark.extra_info["batch"] = len(batch)
    benchmark.pedantic(fn, args=(batch,), rounds=20, iterations=1, warmup_rounds=2)
    if benchmark.stats:
        benchmark.extra_info["per_check_ns"] = round(benchmark.stats.stats.min / len(batch) * 1e9)


def test_floor_a_dict_of_frozen_decisions(benchmark: Any, world: tuple[Engine, list[str]]) -> None:
    engine, ids = world
    batch = _batch(ids)
    table = {a: engine.check(a, "host") for a in batch}

    def floor(account_id: str, capability: str) -> object:
        return table[account_id]

    def run(b: list[str]) -> None:
        for a in b:
            floor(a, "host")

    _run(benchmark, run, batch)


def test_floor_at_full_size(benchmark: Any, world: tuple[Engine, list[str]]) -> None:
    """The same floor, but its dict holds every account of the world (as the index's does),
    not only the batch's: what a lookup among a million keys costs by itself."""
    engine, ids = world
    batch = _batch(ids)
    decision = engine.check(batch[0], "host")
    table = dict.fromkeys(ids, decision)

    def floor(account_id: str, capability: str) -> object:
        return table[account_id]

    def run(b: list[str]) -> None:
        for a in b:
            floor(a, "host")

    _run(benchmark, run, batch)


def test_check_now(benchmark: Any, world: tuple[Engine, list[str]]) -> None:
    engine, ids = world
    batch = _batch(ids)
    check = engine.check
    for a in batch:
        check(a, "host")

    def run(b: list[str]) -> None:
        for a in b:
            check(a, "host")

    _run(benchmark, run, batch)
    assert check(batch[0], "host").capability == "host"


def _historical(
    benchmark: Any, world: tuple[Engine, list[str]], at: datetime, known: datetime | None = None
) -> None:
    """The batch checked at `at` as known at `known` (None: everything), warmed once."""
    engine, ids = world
    batch = _batch(ids)
    check = engine.check

    def run(b: list[str]) -> None:
        for a in b:
            check(a, "host", at, known)

    run(batch)
    _run(benchmark, run, batch)


def test_check_at(benchmark: Any, world: tuple[Engine, list[str]]) -> None:
    _historical(benchmark, world, AT)


def test_check_at_as_known_at(benchmark: Any, world: tuple[Engine, list[str]]) -> None:
    _historical(benchmark, world, AT, KNOWN)


def test_check_before_registration(benchmark: Any, world: tuple[Engine, list[str]]) -> None:
    """Rule 7: every account asked at a time before its registration took effect (an
    auditor's "what could they do then"); the verdict names the account's own times."""
    _historical(benchmark, world, EARLY)
    engine, ids = world
    assert "registration" in engine.check(ids[0], "host", EARLY).reason


def test_pycasbin_rbac_with_domains(
    benchmark: Any, world: tuple[Engine, list[str]], tmp_path: Path
) -> None:
    """The same question to pycasbin (RBAC with domains): a side-by-side row. (FastEnforcer's
    key filter matches a policy's leading fields to the request's, which role policies do not
    have, so the plain Enforcer it is.)"""
    casbin = pytest.importorskip("casbin")
    engine, ids = world
    batch = _batch(ids)
    model = tmp_path / "rbac_with_domains.conf"
    model.write_text("""
[request_definition]
r = sub, dom, obj, act
[policy_definition]
p = sub, dom, obj, act
[role_definition]
g = _, _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.obj == p.obj && r.act == p.act
""")
    enforcer = casbin.Enforcer(str(model))
    enforcer.add_policies([["host", region, "meeting", "host"] for region in REGIONS])
    region_of = engine.facts.region_of
    enforcer.add_grouping_policies(
        [[a, "host", region_of[a]] for a in set(batch) if engine.check(a, "host").allowed]
    )

    def run(b: list[str]) -> None:
        for a in b:
            enforcer.enforce(a, region_of[a], "meeting", "host")

    assert all(
        enforcer.enforce(a, region_of[a], "meeting", "host") == engine.check(a, "host").allowed
        for a in batch[:200]
    )
    _run(benchmark, run, batch[: max(BATCH // 10, 1)])
