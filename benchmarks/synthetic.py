"""Synthetic worlds for the benchmarks: many accounts, as facts in memory or as events in
a store. Sizes come from $BENCH_ACCOUNTS (default small, so CI runs them tiny)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from entitlements.application.engine import EntitlementsApplication
from entitlements.domain.account import Account, account_uuid
from entitlements.domain.region import Region, region_id
from entitlements.domain.rules import Fact, hosting_corrections
from projections.check_index import CheckIndex
from projections.facts import Changed, LogFacts

ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "2000"))
REGIONS = ("CN", "US", "HK", "DE")
PLANS = ("free", "free", "pro", "business", "enterprise")
START = datetime(2020, 1, 1, tzinfo=UTC)
RULE_AT = datetime(2020, 5, 19, tzinfo=UTC)


def account_ids(n: int = ACCOUNTS) -> list[str]:
    return [f"acct-{i:07d}" for i in range(n)]


def world_facts(n: int = ACCOUNTS) -> LogFacts:
    """n accounts over four regions; CN suspends free hosting on 19 May 2020, and its free
    accounts carry the rule-caused HostingRevoked, as the engine would record it."""
    facts = LogFacts()
    rule = Fact(
        "region:CN", "RegionRuleApplied", 2, RULE_AT, RULE_AT, {"rule": "free_hosting_suspended"}
    )
    facts.regions["CN"] = [
        Fact("region:CN", "RegionOpened", 1, RULE_AT, RULE_AT, {"region": "CN"}),
        rule,
    ]
    for i, account_id in enumerate(account_ids(n)):
        region, plan = REGIONS[i % len(REGIONS)], PLANS[i % len(PLANS)]
        t = START + timedelta(minutes=i % 100_000)
        channel = "online" if plan in ("free", "pro") else "direct"
        registered = Fact(
            f"account:{account_id}",
            "AccountRegistered",
            1,
            t,
            t,
            {"region": region, "plan": plan, "channel": channel, "partner": None},
        )
        account_facts = [registered]
        if region == "CN":
            account_facts += hosting_corrections(account_facts, facts.regions["CN"], RULE_AT)
        facts.accounts[account_id] = account_facts
        facts.region_of[account_id] = region
        facts.members.setdefault(region, []).append(account_id)
    facts.position = n
    return facts


def world_index(facts: LogFacts, cache_size: int | None = None) -> CheckIndex:
    index = CheckIndex(cache_size or max(2 * len(facts.accounts), 1024))
    index.update(facts, Changed(accounts=set(facts.accounts), regions=set(facts.regions)))
    return index


def registration_events(n: int, region: str = "CN", plan: str = "free") -> Iterator[Any]:
    """AccountRegistered events for n accounts, as the engine would record them."""
    for i, account_id in enumerate(account_ids(n)):
        t = START + timedelta(seconds=i)
        yield Account.AccountRegistered(  # type: ignore[attr-defined]
            originator_id=account_uuid(account_id),
            originator_version=1,
            timestamp=t,
            originator_topic="entitlements:Account",
            account_id=account_id,
            region=region,
            plan=plan,
            channel="online",
            partner=None,
            effective_at=t,
            recorded_at=t,
            actor="synthetic",
            command_id=None,
        )


def region_opened(code: str, at: datetime) -> Any:
    return Region.RegionOpened(  # type: ignore[attr-defined]
        originator_id=region_id(code),
        originator_version=1,
        timestamp=at,
        originator_topic="entitlements:Region",
        region=code,
        effective_at=at,
        recorded_at=at,
        actor="synthetic",
        command_id=None,
    )


def fill_store(app: EntitlementsApplication, events: Iterator[Any], batch: int = 10_000) -> int:
    """Insert events straight through the mapper and recorder, many per transaction."""
    stored, count = [], 0
    for e in events:
        stored.append(app.mapper.to_stored_event(e))
        if len(stored) >= batch:
            app.recorder.insert_events(stored)
            count += len(stored)
            stored = []
    if stored:
        app.recorder.insert_events(stored)
        count += len(stored)
    return count


def uuid_of(account_id: str) -> UUID:
    return account_uuid(account_id)


def mixed_registration_events(n: int) -> Iterator[Any]:
    """AccountRegistered events for n accounts over four regions and every plan (paid plans
    bought directly), one second apart, as the engine would record them."""
    for i, account_id in enumerate(account_ids(n)):
        t = START + timedelta(seconds=i)
        plan = PLANS[i % len(PLANS)]
        yield Account.AccountRegistered(  # type: ignore[attr-defined]
            originator_id=account_uuid(account_id),
            originator_version=1,
            timestamp=t,
            originator_topic="entitlements:Account",
            account_id=account_id,
            region=REGIONS[i % len(REGIONS)],
            plan=plan,
            channel="online" if plan in ("free", "pro") else "direct",
            partner=None,
            effective_at=t,
            recorded_at=t,
            actor="synthetic",
            command_id=None,
        )
