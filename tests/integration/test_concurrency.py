"""Two processes applying commands to the same account at once lose nothing."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from entitlements import open_engine
from entitlements.application.engine import Engine

RENEWALS = 25


def renew_many(url: str, plan: str, start: mp.synchronize.Event, out: mp.Queue[Any]) -> None:
    """Open (renew) the same account's subscription many times, one command per call."""
    start.wait(10)
    statuses: list[str] = []
    try:
        with open_engine(url) as engine:
            for _ in range(RENEWALS):
                (r,) = engine.apply(
                    [
                        {
                            "command": "open_subscription",
                            "account_id": "shared",
                            "plan": plan,
                            "channel": "direct",
                            "effective_at": "2020-01-02",
                        }
                    ]
                )
                statuses.append(r.status)
    except Exception as e:  # report, don't hang the test
        statuses.append(f"error: {e!r}")
    out.put(statuses)


def test_two_processes_writing_one_account_lose_no_event(store_url: str, engine: Engine) -> None:
    engine.apply(
        [
            {
                "command": "register_account",
                "account_id": "shared",
                "region": "US",
                "plan": "pro",
                "channel": "online",
                "effective_at": "2020-01-01",
            }
        ]
    )
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=renew_many, args=(store_url, plan, start, out))
        for plan in ("business", "enterprise")
    ]
    for w in workers:
        w.start()
    start.set()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    assert all(s == ["applied"] * RENEWALS for s in results), [
        x for s in results for x in s if x != "applied"
    ][:3]
    history = engine.history("shared")
    assert [e["version"] for e in history] == list(range(1, 2 * RENEWALS + 2))
    opened = [e["plan"] for e in history if e["type"] == "SubscriptionOpened"]
    assert sorted(opened) == ["business"] * RENEWALS + ["enterprise"] * RENEWALS
