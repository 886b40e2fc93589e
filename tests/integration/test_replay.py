"""Replaying the whole log into fresh aggregates gives the same answers as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from entitlements.application.engine import Engine
from entitlements.domain.account import Account
from entitlements.domain.commands import parse_command_file
from entitlements.domain.region import Region
from entitlements.domain.rules import CAPABILITIES, decide, fold_account, fold_region
from tests.conftest import scenario_file


def replay_log(engine: Engine) -> tuple[dict[str, Account], dict[str, Region]]:
    """Every event of the log, in log order, mutated into brand-new aggregate objects."""
    objects: dict[Any, Any] = {}
    for n in engine.app.recorder.select_notifications(start=1, limit=1_000_000):
        event = engine.app.mapper.to_domain_event(n)
        objects[event.originator_id] = event.mutate(objects.get(event.originator_id))  # type: ignore[attr-defined]
    accounts = {a.account_id: a for a in objects.values() if isinstance(a, Account)}
    regions = {r.code: r for r in objects.values() if isinstance(r, Region)}
    return accounts, regions


def test_replaying_the_log_into_fresh_aggregates_gives_the_same_answers(engine: Engine) -> None:
    engine.apply_parsed(parse_command_file(scenario_file("china-2020.jsonl")))
    accounts, regions = replay_log(engine)
    assert len(accounts) == 8
    start = datetime(2020, 1, 1, tzinfo=UTC)
    times = [start + timedelta(days=7 * i) for i in range(50)]
    compared = 0
    for account_id, account in accounts.items():
        region = regions.get(account.region)
        for t in times:
            for k in (None, t):
                acc = fold_account(account.facts, t, k)
                reg = fold_region(account.region, region.facts if region else [], t, k)
                for cap in CAPABILITIES:
                    replayed = decide(cap, acc, reg)
                    answered = engine.check(account_id, cap, at=t, as_known_at=k)
                    assert (answered.allowed, answered.value) == (replayed.allowed, replayed.value)
                    compared += 1
    assert compared == 8 * 50 * 2 * len(CAPABILITIES)


def test_a_reopened_engine_answers_exactly_as_before(store_url: str, engine: Engine) -> None:
    engine.apply_parsed(parse_command_file(scenario_file("china-2020.jsonl")))
    before = [
        engine.capabilities(a, at="2020-10-01") for a in ("cn-free-01", "cn-pro-01", "cn-ent-02")
    ]
    engine.close()
    from entitlements import open_engine

    with open_engine(store_url) as reopened:
        after = [
            reopened.capabilities(a, at="2020-10-01")
            for a in ("cn-free-01", "cn-pro-01", "cn-ent-02")
        ]
    assert after == before
