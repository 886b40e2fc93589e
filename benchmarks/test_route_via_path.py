"""`route_via:R` on the hot path against `host`, in the same run (issue 21's target: no more
than `host` costs).

A world of its own: the synthetic world (benchmarks/synthetic.py) with CN's data centres
isolated (`data_centre_isolated`, recorded ahead of time), a choice of data regions on
every third paid account, and every region with events of its own (so `host`, like
`route_via:R`, reads a region's line, not the fixed state of a region without events). Each round checks the same batch of accounts (random order) for
one capability: `host`; `route_via:CN` (R isolated: answered from CN's line, not the
account's); `route_via:US` (the account's own region for a quarter, a chosen region or no
choice for the rest). Now, with `at`, and with `at` + `as_known_at`. `per_check_ns` in
extra_info is the fastest round's time over the batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

import pytest

from benchmarks.synthetic import ACCOUNTS, REGIONS, START, world_facts, world_index
from entitlements.application.engine import Engine
from entitlements.domain.events import DATA_REGIONS_CHOSEN, REGION_OPENED, REGION_RULE_APPLIED
from entitlements.domain.rules import ISOLATION_RULE, PAID_PLANS, Fact
from projections.facts import LogFacts

BATCH = 10_000
AT = datetime(2020, 6, 1, tzinfo=UTC)
KNOWN = datetime(2020, 5, 1, tzinfo=UTC)
ISOLATED_AT = datetime(2020, 4, 18, tzinfo=UTC)
CAPABILITIES = ("host", "route_via:CN", "route_via:US")


def residency_facts(n: int = ACCOUNTS) -> LogFacts:
    """The synthetic world, with CN isolated from 18 April 2020 (recorded four days ahead)
    and every third paid account choosing US and DE from 1 March 2020."""
    facts = world_facts(n)
    cn = facts.regions["CN"]
    isolated = Fact(
        "region:CN",
        REGION_RULE_APPLIED,
        len(cn) + 1,
        ISOLATED_AT,
        ISOLATED_AT - timedelta(days=4),
        {"rule": ISOLATION_RULE},
    )
    facts.regions["CN"] = sorted([*cn, isolated], key=lambda f: f.order)
    for code in REGIONS:  # every region has events of its own, as in a store in use
        opened = Fact(f"region:{code}", REGION_OPENED, 1, START, START, {"region": code})
        facts.regions.setdefault(code, [opened])
    chosen_at = START + timedelta(days=60)
    for i, (account_id, account_facts) in enumerate(facts.accounts.items()):
        registered = account_facts[0]
        if registered.data["plan"] in PAID_PLANS and i % 3 == 0:
            version = max(f.version for f in account_facts) + 1
            choice = Fact(
                registered.stream,
                DATA_REGIONS_CHOSEN,
                version,
                chosen_at,
                chosen_at,
                {"regions": ["US", "DE"]},
            )
            facts.accounts[account_id] = sorted([*account_facts, choice], key=lambda f: f.order)
    return facts


@pytest.fixture(scope="module")
def residency_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, list[str]]]:
    facts = residency_facts(ACCOUNTS)
    index = world_index(facts)
    path: Path = tmp_path_factory.mktemp("bench-residency") / "bench.db"
    engine = Engine(f"sqlite:///{path}", start=False)
    engine.projector.facts = facts
    engine.index.replace(index.accounts, index.regions, facts.position)
    engine.index.cache_size = 2 * ACCOUNTS + 1024
    ids = list(facts.accounts)
    random.Random(7).shuffle(ids)
    yield engine, ids
    engine.app.close()


def _batch(ids: list[str]) -> list[str]:
    return (ids * (BATCH // len(ids) + 1))[:BATCH]


def _run(benchmark: Any, fn: Callable[[list[str]], None], batch: list[str]) -> None:
    benchmark.extra_info["batch"] = len(batch)
    benchmark.pedantic(fn, args=(batch,), rounds=20, iterations=1, warmup_rounds=2)
    if benchmark.stats:
        benchmark.extra_info["per_check_ns"] = round(benchmark.stats.stats.min / len(batch) * 1e9)


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_check_now(
    benchmark: Any, residency_world: tuple[Engine, list[str]], capability: str
) -> None:
    engine, ids = residency_world
    batch = _batch(ids)
    check = engine.check
    for a in batch:
        check(a, capability)

    def run(b: list[str]) -> None:
        for a in b:
            check(a, capability)

    _run(benchmark, run, batch)
    assert check(batch[0], capability).capability == capability


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_check_at(
    benchmark: Any, residency_world: tuple[Engine, list[str]], capability: str
) -> None:
    engine, ids = residency_world
    batch = _batch(ids)
    check = engine.check

    def run(b: list[str]) -> None:
        for a in b:
            check(a, capability, AT)

    run(batch)
    _run(benchmark, run, batch)


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_check_at_as_known_at(
    benchmark: Any, residency_world: tuple[Engine, list[str]], capability: str
) -> None:
    engine, ids = residency_world
    batch = _batch(ids)
    check = engine.check

    def run(b: list[str]) -> None:
        for a in b:
            check(a, capability, AT, KNOWN)

    run(batch)
    _run(benchmark, run, batch)


def test_the_world_answers_as_the_rules_say(residency_world: tuple[Engine, list[str]]) -> None:
    """Not timed: the world is what the docstring says (CN isolated, choices in force)."""
    engine, ids = residency_world
    region_of = engine.projector.facts.region_of
    for a in ids[:400]:
        cn = engine.check(a, "route_via:CN", AT)
        assert cn.allowed is (region_of[a] == "CN"), (a, cn.reason)
        chose = any(f.type == DATA_REGIONS_CHOSEN for f in engine.projector.facts.accounts[a])
        before = engine.check(a, "route_via:CN", AT, ISOLATED_AT - timedelta(days=5))
        assert before.allowed is (region_of[a] == "CN" or not chose), (a, before.reason)
        hk = engine.check(a, "route_via:HK", AT)
        assert hk.allowed is (region_of[a] == "HK" or not chose), (a, hk.reason)


@pytest.mark.parametrize("mode", ["now", "at", "at_as_known_at"])
def test_alternating_rounds(
    benchmark: Any, residency_world: tuple[Engine, list[str]], mode: str
) -> None:
    """The three capabilities timed in alternating rounds (host, route_via:CN, route_via:US,
    host, ...), so a noisy neighbour on this shared machine weighs on all three alike; the
    fastest round of each, per check, in extra_info (`<capability>_ns`), and their ratios to
    host (`<capability>_vs_host`)."""
    engine, ids = residency_world
    batch = _batch(ids)
    check = engine.check
    args: tuple[Any, ...] = {"now": (), "at": (AT,), "at_as_known_at": (AT, KNOWN)}[mode]
    rounds = 2 if benchmark.disabled else 15
    best = dict.fromkeys(CAPABILITIES, float("inf"))
    for _ in range(rounds):
        for capability in CAPABILITIES:
            started = perf_counter()
            for a in batch:
                check(a, capability, *args)
            best[capability] = min(best[capability], perf_counter() - started)
    for capability, seconds in best.items():
        benchmark.extra_info[f"{capability}_ns"] = round(seconds / len(batch) * 1e9)
        benchmark.extra_info[f"{capability}_vs_host"] = round(seconds / best["host"], 3)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
