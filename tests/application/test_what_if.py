"""What-if on the in-memory store: hypothetical commands applied to a copy of the log.

The property: what-if of commands recorded after the log equals applying them to a copy of
the store and comparing every `check` of the two (every account, capability and effective
time where an answer can change), over random histories (tests/integration/
test_equivalence.py's strategies). And the china-2020 question, backdated: had CN
suspended free hosting on 1 May instead of 19 May, who would have lost what, and when?
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.application.what_if import what_if, window
from entitlements.domain.commands import MalformedCommand, parse_commands, with_derived_id
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.rules import CAPABILITIES, AccountState, RegionState, decide
from entitlements.domain.times import iso, parse_time
from tests.conftest import read_jsonl, scenario_file
from tests.integration.test_equivalence import ACCOUNT_POOL, day, scenarios

Answer = tuple[bool, Any]


def numbered(items: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Items validated as a what-if validates them, each with its command_id."""
    cmds = parse_commands(enumerate(items, 1), "item", future=True)
    return [(n, with_derived_id(c)) for n, c in enumerate(cmds, 1)]


@pytest.fixture
def china() -> Iterator[Engine]:
    with open_engine("memory://") as e:
        e.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        yield e


EARLIER_RULE = {
    "command": "apply_region_rule",
    "region": "CN",
    "rule": "free_hosting_suspended",
    "effective_at": "2020-05-01",
    "recorded_at": "2020-05-01",
}


def test_china_free_hosting_suspended_on_1_may_instead_of_19_may(china: Engine) -> None:
    """Backdated before the store's newest (allowed here): cn-free-01, the one free CN
    account hosting then, loses hosting and its free limits from 1 May to 19 May; nobody
    else changes, and the store records nothing."""
    position = china.position()
    answer = what_if(china, numbered([EARLIER_RULE])).as_dict()
    assert [r["status"] for r in answer["results"]] == ["applied"]
    lost = {(c["account_id"], c["capability"], c["from"], c["to"]) for c in answer["changes"]}
    assert lost == {
        ("cn-free-01", cap, "2020-05-01T00:00:00Z", "2020-05-19T00:00:00Z")
        for cap in ("host", "max_participants", "max_meeting_minutes")
    }
    host = next(c for c in answer["changes"] if c["capability"] == "host")
    assert host["before"] == {"allowed": True, "value": None}
    assert host["after"] == {"allowed": False, "value": None}
    assert answer["summary"] == {
        "CN": {"free": {"accounts": 1, "lost": 3, "gained": 0, "changed": 0}}
    }
    assert answer["position"] == position == china.position()
    assert china.check("cn-free-01", "host", at="2020-05-10").allowed  # nothing recorded


def test_a_command_is_decided_against_what_was_recorded_before_it(china: Engine) -> None:
    """An online upgrade of cn-free-01 effective 1 July: recorded now, it is rejected
    (online subscriptions in CN closed from 1 June, recorded on 1 June); recorded on 1 Feb,
    before anyone knew of the rule, it is applied, as apply would have decided it then."""
    late = {
        "command": "open_subscription",
        "account_id": "cn-free-01",
        "plan": "pro",
        "channel": "online",
        "effective_at": "2020-07-01",
    }
    now = what_if(china, numbered([late]))  # recorded now: after the rule closed them
    assert now.results[0].status == "rejected"
    assert "online" in (now.results[0].reason or "")
    then = what_if(china, numbered([{**late, "recorded_at": "2020-02-01"}]))
    assert then.results[0].status == "applied"
    # the rule's fan-out recorded on 19 May is kept as it is (never re-validated); the
    # engine's reconcile then restores hosting from 1 July, the plan being pro from then
    host = [(iso(c.start), c.end, c.after[0]) for c in then.changes if c.capability == "host"]
    assert host == [("2020-07-01T00:00:00Z", None, True)]


def test_window_and_known_time_limit_the_changes(china: Engine) -> None:
    answer = what_if(china, numbered([EARLIER_RULE]), *window("2020-05-10", "2020-05-15", None))
    assert {(c.start.day, c.end and c.end.day) for c in answer.changes} == {(10, 15)}
    # as known on 30 Apr, the rule recorded on 1 May is not known yet: nothing changes
    assert what_if(china, numbered([EARLIER_RULE]), *window(None, None, "2020-04-30")).changes == []


def test_a_rejected_rule_says_why(china: Engine) -> None:
    lift = {**EARLIER_RULE, "command": "lift_region_rule", "rule": "direct_sales_closed"}
    answer = what_if(china, numbered([{**lift, "effective_at": "2020-01-02"}]))
    assert answer.results[0].status == "rejected" and answer.results[0].reason
    assert answer.changes == []


def test_a_malformed_item_refuses_the_whole_batch() -> None:
    with pytest.raises(MalformedCommand, match="item 2, field 'effective_at'"):
        numbered([EARLIER_RULE, {**EARLIER_RULE, "effective_at": "soon"}])


def test_a_bad_window_names_the_field() -> None:
    with pytest.raises(ValueError, match="^to: "):
        window("2020-05-02", "2020-05-01", None)
    with pytest.raises(ValueError, match="^as_known_at: "):
        window(None, None, "yesterday-ish")


# -- the property: what-if == apply to a copy, then diff every check ------------------------


def _answer(engine: Engine, account: str, capability: str, at: datetime) -> Answer:
    try:
        d = engine.check(account, capability, at=at)
    except UnknownAccount:  # never registered: rule 7, as the what-if's fold says
        v = decide(capability, AccountState(), RegionState(""))
        return (v.allowed, v.value)
    return (d.allowed, d.value)


def _times(commands: list[dict[str, Any]]) -> list[datetime]:
    """Every effective time a command names, and a time before all of them: the points
    where an answer can change (the rules read no other time)."""
    return sorted({day(-1), *(parse_time(c["effective_at"]) for c in commands)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 3))
def test_what_if_equals_apply_on_a_copy(commands: list[dict[str, Any]], extra: int) -> None:
    history, hypothetical = commands[:-extra], commands[-extra:]
    with open_engine("memory://") as store, open_engine("memory://") as copy:
        store.apply(history)
        copy.apply(history)
        position = store.position()
        answer = what_if(store, numbered(hypothetical))
        applied = copy.apply(hypothetical)
        assert store.position() == position
        assert [(r.status, r.reason) for r in answer.results] == [
            (r.status, r.reason) for r in applied
        ]
        expected: dict[tuple[str, str, datetime], tuple[Answer, Answer]] = {}
        for at in _times(commands):
            for account in ACCOUNT_POOL:
                for capability in CAPABILITIES:
                    before = _answer(store, account, capability, at)
                    after = _answer(copy, account, capability, at)
                    if before != after:
                        expected[account, capability, at] = (before, after)
        got = {
            (c.account_id, c.capability, at): (c.before, c.after)
            for c in answer.changes
            for at in _times(commands)
            if c.start <= at and (c.end is None or at < c.end)
        }
        event(f"changed: {bool(expected)}")
        assert got == expected


def test_a_command_already_on_file_is_a_duplicate(china: Engine) -> None:
    """The copy knows the store's command ids: a command on file is reported as `apply`
    reports it again (its original result, nothing recorded), and changes nothing."""
    revoke = {
        "command": "revoke_hosting",
        "account_id": "us-pro-01",
        "reason": "abuse",
        "command_id": "crm-1",
        "effective_at": "2020-12-01",
    }
    (original,) = china.apply([revoke])
    answer = what_if(china, numbered([revoke]))
    assert answer.results[0].duplicate and answer.results[0].position == original.position
    assert answer.changes == []
    undone = what_if(
        china, numbered([{**revoke, "command": "restore_hosting", "command_id": "c2"}])
    )
    assert {c.capability for c in undone.changes} == {
        "host",
        "max_participants",
        "max_meeting_minutes",
    }
    assert {(c.account_id, c.before[0], c.after[0]) for c in undone.changes} == {
        ("us-pro-01", False, True)
    }


def test_a_command_recorded_before_the_whole_log(china: Engine) -> None:
    """Recorded before the log's first record: applied first, then the whole log after it
    (read again, not the store's index taken whole: the copy holds an event already)."""
    early = {
        "command": "register_account",
        "account_id": "cn-early-01",
        "region": "CN",
        "plan": "free",
        "channel": "online",
        "effective_at": "2020-01-01",
        "recorded_at": "2019-12-01",
    }
    answer = what_if(china, numbered([early]))
    assert answer.results[0].status == "applied" and answer.results[0].position == 2
    host = [c for c in answer.changes if c.capability == "host"]
    # the 19 May rule's fan-out, copied as recorded, did not reach it: reconcile did
    assert {(c.account_id, iso(c.start), c.end and iso(c.end)) for c in host} == {
        ("cn-early-01", "2020-01-01T00:00:00Z", "2020-05-19T00:00:00Z")
    }
    assert {c.account_id for c in answer.changes} == {"cn-early-01"}


# -- what-if --png's data: a region's daily counts in both histories -----------------------


def test_counts_a_region_before_and_after_around_the_changes(china: Engine) -> None:
    """The one region the changes are in; the capabilities whose allowed flips, in `check`'s
    order; the days around the changes (1 to 18 May, 3 days either side); cn-free-01 out
    of the free count from 1 May instead of 19 May, and every other count the same."""
    counts = what_if(china, numbered([EARLIER_RULE]), counts=True).counts
    assert counts is not None and counts.region == "CN"
    assert (counts.before.start, counts.before.end) == (date(2020, 4, 28), date(2020, 5, 21))
    assert (counts.after.start, counts.after.end) == (date(2020, 4, 28), date(2020, 5, 21))
    assert [s.capability for s in counts.after.series] == [
        "host",
        "max_participants",
        "max_meeting_minutes",
    ]
    for was, will in zip(counts.before.series, counts.after.series, strict=True):
        for (day_, b), (same_day, a) in zip(was.days, will.days, strict=True):
            assert day_ == same_day
            moved = date(2020, 5, 1) <= day_ <= date(2020, 5, 18)
            assert a == ({**b, "free": b["free"] - 1} if moved else b), day_
            assert b["free"] == (1 if day_ < date(2020, 5, 19) else 0)
    assert [(s.at.day, s.rule) for s in counts.after.switches] == [
        (1, "free_hosting_suspended"),
        (19, "registration_suspended"),
    ]


def test_counts_take_the_window_and_the_known_time(china: Engine) -> None:
    """--from/--to: the days whose 00:00 UTC is in [from, to); as known on 30 Apr the rule
    recorded on 1 May is not known: the region named, before and after the same."""
    cmds = numbered([EARLIER_RULE])
    counts = what_if(china, cmds, *window("2020-04-01", "2020-07-01", None), counts=True).counts
    assert counts is not None
    assert (counts.after.start, counts.after.end) == (date(2020, 4, 1), date(2020, 6, 30))
    blind = window("2020-04-01", "2020-07-01", "2020-04-30")
    counts = what_if(china, cmds, *blind, counts=True, counts_region="CN").counts
    assert counts is not None and counts.after.series == counts.before.series
    assert [s.capability for s in counts.after.series] == ["host"]  # nothing changed


def test_counts_need_a_region_they_can_name(china: Engine) -> None:
    cmds = numbered([EARLIER_RULE])
    with pytest.raises(ValueError, match="^--region: no account or rule recorded in 'ZZ'"):
        what_if(china, cmds, counts=True, counts_region="ZZ")
    us = {
        "command": "revoke_hosting",
        "account_id": "us-pro-01",
        "reason": "audit",
        "effective_at": "2020-07-01",
    }
    with pytest.raises(ValueError, match="^--region: the what-if changes answers in CN, US"):
        what_if(china, numbered([EARLIER_RULE, us]), counts=True)
    assert what_if(china, numbered([EARLIER_RULE, us]), counts=True, counts_region="US").counts
    lift = {**EARLIER_RULE, "command": "lift_region_rule", "rule": "direct_sales_closed"}
    with pytest.raises(ValueError, match="^--region: the what-if changes no answer"):
        what_if(china, numbered([{**lift, "effective_at": "2020-01-02"}]), counts=True)
    with pytest.raises(ValueError, match="^--from: no answer changes in US"):
        what_if(china, cmds, counts=True, counts_region="US")
    with pytest.raises(ValueError, match="^--to: no 00:00 UTC"):
        what_if(china, cmds, *window("2020-05-02T01:00", "2020-05-02T02:00", None), counts=True)
