"""The change feed on the china-2020 story: what each recorded event changed, once, in log
order, and pages that neither miss nor repeat an item."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from entitlements.application.engine import Engine
from projections.changes import RegionLog, changes_after
from tests.conftest import read_jsonl, scenario_file
from tests.integration.test_equivalence import STORY, scenarios

YES = {"allowed": True, "value": None}
NO = {"allowed": False, "value": None}
EVERYTHING = 1_000_000


@pytest.fixture
def story(engine: Engine) -> Engine:
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    return engine


def head(engine: Engine) -> int:
    return engine.app.recorder.max_notification_id() or 0


def of(items: list[dict[str, Any]], who: str, capability: str) -> list[dict[str, Any]]:
    return [
        i
        for i in items
        if who in (i.get("account_id"), i.get("region")) and i["capability"] == capability
    ]


def test_free_hosting_rule_reaches_free_accounts_as_their_own_items(story: Engine) -> None:
    items, _ = changes_after(story.app, 0, EVERYTHING)
    revoked = [
        i
        for i in items
        if i.get("account_id") == "cn-free-01" and i["effective_at"] == "2020-05-19T00:00:00Z"
    ]
    assert [(i["capability"], i["old"], i["new"]) for i in revoked] == [
        ("host", YES, NO),
        ("max_participants", {"allowed": True, "value": 100}, {"allowed": False, "value": 0}),
        ("max_meeting_minutes", {"allowed": True, "value": 40}, {"allowed": False, "value": 0}),
    ]
    cause = revoked[0]["cause"]
    assert cause["type"] == "HostingRevoked" and cause["stream"] == "account:cn-free-01"
    assert cause["cause"]["rule"] == "free_hosting_suspended"
    assert cause["effective_at"] == cause["recorded_at"] == "2020-05-19T00:00:00Z"
    assert len({i["position"] for i in revoked}) == 1  # one event, three answers
    # the rule's own region event gives no item: its accounts' events do
    assert all(
        i["cause"].get("rule") not in ("free_hosting_suspended", "registration_suspended")
        for i in items
        if "region" in i
    )


def test_region_rules_that_do_not_fan_out_give_one_item_for_the_region(story: Engine) -> None:
    items, _ = changes_after(story.app, 0, EVERYTHING)
    region_items = [
        (i["region"], i["capability"], i["old"], i["new"], i["effective_at"], i["recorded_at"])
        for i in items
        if "region" in i
    ]
    assert region_items == [
        ("CN", "subscribe_online", YES, NO, "2020-06-01T00:00:00Z", "2020-06-01T00:00:00Z"),
        # three partners authorized: only the first changes the answer
        ("CN", "purchase_via_partner", NO, YES, "2020-08-03T00:00:00Z", "2020-08-03T00:00:00Z"),
        # announced 3 Aug, effective 23 Aug: listed when recorded, with its effective time
        ("CN", "purchase_direct", YES, NO, "2020-08-23T00:00:00Z", "2020-08-03T00:00:00Z"),
    ]
    closed = of(items, "CN", "subscribe_online")[0]["cause"]
    assert closed["type"] == "RegionRuleApplied" and closed["rule"] == "online_subscriptions_closed"
    assert closed["stream"] == "region:CN"
    assert not any(i.get("account_id") and i["cause"]["type"].startswith("Region") for i in items)


def test_backdated_revocation_is_listed_when_recorded_with_its_effective_time(
    story: Engine,
) -> None:
    items, _ = changes_after(story.app, 0, EVERYTHING)
    late = [
        i
        for i in items
        if i.get("account_id") == "cn-ent-02" and i["recorded_at"] == "2020-11-01T00:00:00Z"
    ]
    assert [(i["capability"], i["old"], i["new"]) for i in late] == [
        ("host", YES, NO),
        ("max_participants", {"allowed": True, "value": 500}, {"allowed": False, "value": 0}),
        ("max_meeting_minutes", {"allowed": True, "value": 1440}, {"allowed": False, "value": 0}),
    ]
    assert {i["effective_at"] for i in late} == {"2020-09-15T00:00:00Z"}
    cause = late[0]["cause"]
    assert cause["type"] == "HostingRevoked" and cause["cause"] is None  # a manual revocation
    assert cause["reason"] == "contract breach found in audit"
    assert late == items[-3:]  # the last thing the story recorded


def test_items_are_in_log_order_and_each_says_what_changed(story: Engine) -> None:
    items, next_position = changes_after(story.app, 0, EVERYTHING)
    assert next_position == head(story)
    positions = [i["position"] for i in items]
    assert positions == sorted(positions)
    assert all(i["old"] != i["new"] for i in items)
    # CN's suspension requests for us-pro-01 and hk-free-01 were rejected: only their registrations
    outside = [i for i in items if i.get("account_id") in ("us-pro-01", "hk-free-01")]
    assert {i["cause"]["type"] for i in outside} == {"AccountRegistered"}
    # cn-ent-03 (direct sales closed) was rejected: no registration, no item
    assert not [i for i in items if i.get("account_id") == "cn-ent-03"]


def test_paging_one_at_a_time_gives_the_same_items_as_one_call(story: Engine) -> None:
    everything, last = changes_after(story.app, 0, EVERYTHING)
    paged: list[dict[str, Any]] = []
    after, calls = 0, 0
    while True:
        page, after_next = changes_after(story.app, after, limit=1)
        assert after_next >= after
        if not page:
            assert after_next == last == head(story)  # trailing command records examined
            break
        # a position's items are never split: a page is one position's items
        assert len({i["position"] for i in page}) == 1 and page[0]["position"] == after_next
        paged.extend(page)
        after, calls = after_next, calls + 1
    assert paged == everything
    assert calls == len({i["position"] for i in everything})

    pages_of_ten: list[dict[str, Any]] = []
    items, after = changes_after(story.app, 0, limit=10)
    while items:
        assert len(items) <= 10
        pages_of_ten.extend(items)
        items, after = changes_after(story.app, after, limit=10)
    assert pages_of_ten == everything and after == last


def test_nothing_after_the_head(story: Engine) -> None:
    h = head(story)
    assert changes_after(story.app, h, 5) == ([], h)
    assert changes_after(story.app, h + 10, 5) == ([], h + 10)


def test_a_rejected_command_gives_no_item_but_moves_the_position(story: Engine) -> None:
    h = head(story)
    (result,) = story.apply(
        [
            {
                "command": "revoke_hosting",
                "account_id": "cn-ent-02",
                "reason": "again",
                "effective_at": "2020-11-02",
                "recorded_at": "2020-11-02",
            }
        ]
    )
    assert result.status == "rejected"
    assert changes_after(story.app, h, 100) == ([], head(story))
    assert head(story) > h


def test_an_applied_command_after_the_page_is_the_next_page(story: Engine) -> None:
    _, h = changes_after(story.app, 0, EVERYTHING)
    (result,) = story.apply(
        [
            {
                "command": "restore_hosting",
                "account_id": "cn-ent-02",
                "reason": "settled",
                "effective_at": "2020-11-03",
                "recorded_at": "2020-11-03",
                "actor": "ops@example",
            }
        ]
    )
    items, next_position = changes_after(story.app, h, 100)
    assert next_position == result.position == head(story)
    assert [(i["capability"], i["old"], i["new"]) for i in items] == [
        ("host", NO, YES),
        ("max_participants", {"allowed": False, "value": 0}, {"allowed": True, "value": 500}),
        ("max_meeting_minutes", {"allowed": False, "value": 0}, {"allowed": True, "value": 1440}),
    ]
    assert items[0]["cause"]["type"] == "HostingRestored"
    assert items[0]["cause"]["actor"] == "ops@example"
    assert items[0]["cause"]["effective_at"] == "2020-11-03T00:00:00Z"


def test_limit_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError):
        changes_after(engine.app, 0, 0)
    assert changes_after(engine.app, 0) == ([], 0)


def pages(read: Any, after: int, limit: int) -> list[dict[str, Any]]:
    """Every item after `after`, page by page."""
    items: list[dict[str, Any]] = []
    while True:
        page, after_next = read(after, limit)
        if not page:
            return items
        items.extend(page)
        assert after_next > after
        after = after_next


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_the_feed_kept_in_memory_answers_as_the_log_does(store_url: str, limit: int) -> None:
    """An engine that keeps the feed from its start (an HTTP worker) gives, for every
    `after`, the items a full read of the log gives."""
    from entitlements import open_engine

    with open_engine(store_url) as writer:
        writer.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "early",
                    "region": "CN",
                    "plan": "free",
                    "channel": "online",
                    "effective_at": "2019-12-01",
                    "recorded_at": "2019-12-01",
                }
            ]
        )
        with open_engine(store_url) as worker:
            worker.changes(0)  # the feed starts here
            since = worker.projector.feed.since  # type: ignore[union-attr]
            writer.apply(read_jsonl(scenario_file("china-2020.jsonl")))
            worker.catch_up()
            full = pages(lambda a, n: changes_after(worker.app, a, n), since, 1000)
            kept = pages(worker.projector.feed.read, since, limit)  # type: ignore[union-attr]
            assert kept == full and len(full) > 20
            for after in (since, since + 5, head(worker) - 3, head(worker)):
                assert pages(worker.projector.feed.read, after, limit) == pages(  # type: ignore[union-attr]
                    lambda a, n: changes_after(worker.app, a, n), after, limit
                )
            # Older than the feed: the engine reads the log for it.
            assert pages(lambda a, n: worker.changes(a, n), 0, limit) == pages(
                lambda a, n: changes_after(worker.app, a, n), 0, limit
            )


# -- the change feed without every Fact in memory, against the whole-log algorithm ------


def whole_log_changes_after(app: Any, after: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The algorithm changes_after had before it read only the log after `after`: the
    whole log into LogFacts, each event after `after` compared against all that came
    before it. The reference the new one must answer exactly as (paged by the same
    `Page`: what is compared is which items each position gives)."""
    from entitlements.domain.events import COMMAND_TOPICS
    from projections.changes import Page, _account_items, _region_items
    from projections.facts import LogFacts

    facts = LogFacts()
    page = Page(limit, after)
    for n in app.recorder.select_notifications(start=1, limit=1_000_000):
        if n.topic in COMMAND_TOPICS:
            page.skip(n.id)
            continue
        event = app.mapper.to_domain_event(n)
        changed = facts.add([(n.id, event)])
        if n.id <= after:
            continue
        if changed.accounts:
            (account_id,) = changed.accounts
            stream = facts.accounts[account_id]
            fact = next(f for f in stream if f.version == event.originator_version)
            code = facts.region_of[account_id]
            before = [f for f in stream if f is not fact]
            found = _account_items(
                account_id,
                code,
                facts.region_facts,
                list(facts.regions),
                before,
                stream,
                fact,
                n.id,
            )
        else:
            (code,) = changed.regions
            stream = facts.regions[code]
            fact = next(f for f in stream if f.version == event.originator_version)
            found = _region_items(code, [f for f in stream if f is not fact], fact, n.id)
        if not page.take(n.id, found):
            break
    return page.answer()


def test_region_topics_are_the_region_aggregates_events() -> None:
    from entitlements.domain.region import Region
    from projections.changes import REGION_TOPICS

    stored = {
        v.TOPIC
        for v in vars(Region).values()
        if isinstance(v, type)
        and issubclass(v, Region.Event)
        and hasattr(v, "TOPIC")
        and v is not Region.Created  # the library's base class: never stored
    }
    assert stored == REGION_TOPICS


def test_the_feed_starts_on_the_light_log_without_building_every_fact(story: Engine) -> None:
    from projections.light_log import LightLog

    story.projector.stop()
    with open_engine_on(story) as worker:
        assert isinstance(worker.projector.log, LightLog)
        h = head(worker)
        worker.changes(h)  # starts the feed
        worker.apply(
            [
                {
                    "command": "restore_hosting",
                    "account_id": "cn-ent-02",
                    "reason": "settled",
                    "effective_at": "2020-11-03",
                    "recorded_at": "2020-11-03",
                }
            ]
        )
        assert worker.projector._facts is None  # no LogFacts, ever
        assert isinstance(worker.projector.log, LightLog)
        items, _ = worker.changes(h)
        assert [i["capability"] for i in items] == [
            "host",
            "max_participants",
            "max_meeting_minutes",
        ]


def open_engine_on(engine: Engine) -> Engine:
    from entitlements import open_engine

    return open_engine(engine.url)


def every_page(read: Any, afters: list[int], limit: int) -> list[list[dict[str, Any]]]:
    return [pages(read, after, limit) for after in afters]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    commands=scenarios(),
    cut=st.floats(0, 1),
    limit=st.sampled_from([1, 2, 3, 100]),
    snapshot=st.booleans(),
    order=st.randoms(use_true_random=False),
)
@example(commands=STORY, cut=0.4, limit=3, snapshot=True, order=random.Random(1))
def test_changes_after_and_the_kept_feeds_answer_as_the_whole_log_does(
    commands: list[dict[str, Any]],
    cut: float,
    limit: int,
    snapshot: bool,
    order: random.Random,
) -> None:
    """On random stores: `changes_after` (the log after `after`, each account's own
    stream, the region events with their positions) and the feeds kept by a light process
    and by one holding every Fact, started part way, give for every `after` the pages the
    whole-log algorithm gives."""
    from entitlements import open_engine
    from projections.light_log import LightLog

    first, rest = commands[: int(len(commands) * cut)], commands[int(len(commands) * cut) :]
    with tempfile.TemporaryDirectory(prefix="changes-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'store.db'}"
        with open_engine(url) as writer:
            writer.apply(first)
            if snapshot:
                writer.projector.save_snapshot()
        with open_engine(url) as writer, open_engine(url) as light, open_engine(url) as full:
            light.changes(head(light))  # the feed starts here, on the light log
            assert full.projector.facts is not None  # every Fact, then the feed
            full.changes(head(full))
            since = light.projector.feed.since  # type: ignore[union-attr]
            writer.apply(rest)
            writer.apply(rest[: len(rest) // 3])  # again: some rejected, some applied
            light.catch_up()
            full.catch_up()
            assert isinstance(light.projector.log, LightLog) and light.projector._facts is None
            end = head(writer)
            afters = list(range(0, end + 2))
            expected = every_page(
                lambda a, n: whole_log_changes_after(writer.app, a, n), afters, limit
            )
            assert (
                every_page(lambda a, n: changes_after(writer.app, a, n), afters, limit) == expected
            )
            kept = RegionLog()  # kept across requests, asked in any order
            shuffled = afters[:]
            order.shuffle(shuffled)
            got = {
                a: pages(lambda x, n: changes_after(writer.app, x, n, kept), a, limit)
                for a in shuffled
            }
            assert [got[a] for a in afters] == expected
            for engine in (light, full):
                feed = engine.projector.feed
                assert feed is not None and feed.since == since
                kept_afters = [a for a in afters if a >= since]
                assert every_page(feed.read, kept_afters, limit) == expected[since:]
                assert every_page(engine.changes, afters, limit) == expected


def test_a_region_event_recorded_later_is_not_before_an_earlier_account_event(
    engine: Engine,
) -> None:
    """A rule backdated over a registration was not known when the account registered:
    the registration's items are as the region stood at its position, not as it stands."""
    (registered,) = engine.apply(
        [
            {
                "command": "register_account",
                "account_id": "cn-late",
                "region": "CN",
                "plan": "pro",
                "channel": "online",
                "effective_at": "2020-03-01",
                "recorded_at": "2020-03-01",
            }
        ]
    )
    (closed,) = engine.apply(
        [
            {
                "command": "apply_region_rule",
                "region": "CN",
                "rule": "online_subscriptions_closed",
                "effective_at": "2020-02-01",
                "recorded_at": "2020-04-01",
            }
        ]
    )
    assert registered.status == closed.status == "applied", (registered, closed)
    everything = changes_after(engine.app, 0, EVERYTHING)
    assert everything == whole_log_changes_after(engine.app, 0, EVERYTHING)
    registration = of(everything[0], "cn-late", "subscribe_online")
    assert [(i["old"], i["new"]) for i in registration] == [(NO, YES)]
    assert of(everything[0], "CN", "subscribe_online")[0]["new"] == NO
    kept = RegionLog()  # as an engine keeps it: read as far as the head by a first request
    assert changes_after(engine.app, head(engine), 1, kept) == ([], head(engine))
    assert changes_after(engine.app, 0, EVERYTHING, kept) == everything
