"""`hosting_corrections`: the HostingRevoked / HostingRestored events that make an account's
history agree with rule 3 and the free_hosting_suspended rule (revoked exactly while the
account is free and the rule is on) at every effective time. Pure, in memory.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from entitlements.domain.rules import (
    FREE_HOSTING_RULE,
    Fact,
    FreeHostingSwitches,
    fold_account,
    fold_region,
    free_hosting_switches,
    hosting_corrections,
)
from tests.unit.domain_facts import History, account, region, rule_off, rule_on, t

NOW = t("2020-09-01")


def corrections(acc: History, reg: History) -> list[tuple[str, str, str]]:
    """The corrections as (type, effective date, reason), applied to `acc`."""
    found = hosting_corrections(acc.facts, reg.facts, NOW)
    acc.extend(found)
    return [(f.type, f.effective_at.date().isoformat(), f.data["reason"]) for f in found]


REVOKED = f"{FREE_HOSTING_RULE} in CN: free accounts may not host"


def test_switching_the_rule_on_revokes_hosting_of_a_free_account_from_its_effective_time() -> None:
    acc, reg = account(plan="free"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    assert corrections(acc, reg) == [("HostingRevoked", "2020-05-19", REVOKED)]


def test_a_correction_continues_the_accounts_versions_and_is_recorded_now() -> None:
    acc, reg = account(plan="free"), region()
    acc.add("HostingRevoked", "2020-02-01", reason="abuse")
    switch = rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    (f,) = hosting_corrections(acc.facts, reg.facts, NOW)
    assert (f.stream, f.version, f.recorded_at) == ("account:u-1", 3, NOW)
    assert f.cause == {"rule": FREE_HOSTING_RULE, "region": "CN", "rule_event": switch.ref()}


def test_a_paid_account_is_left_alone() -> None:
    acc, reg = account(plan="pro"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    assert corrections(acc, reg) == []


def test_other_region_rules_do_not_fan_out() -> None:
    acc, reg = account(plan="free"), region()
    rule_on(reg, "online_subscriptions_closed", "2020-06-01")
    rule_on(reg, "registration_suspended", "2020-05-19")
    assert corrections(acc, reg) == []


def test_an_account_registered_free_while_the_rule_is_on_is_revoked_at_registration() -> None:
    reg = region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    acc = account(plan="free", on="2020-07-01")
    (f,) = hosting_corrections(acc.facts, reg.facts, NOW)
    assert (f.type, f.effective_at) == ("HostingRevoked", t("2020-07-01"))
    assert f.cause is not None and f.cause["trigger"] == acc.facts[0].ref()


def test_an_account_that_becomes_free_while_the_rule_is_on_is_revoked_then() -> None:
    acc, reg = account(plan="pro"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    acc.add("SubscriptionClosed", "2020-07-01", reason=None)
    assert corrections(acc, reg) == [("HostingRevoked", "2020-07-01", REVOKED)]


def test_leaving_the_free_plan_restores_hosting() -> None:
    acc, reg = account(plan="free"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    corrections(acc, reg)
    acc.add("SubscriptionOpened", "2020-06-15", plan="pro", channel="online")
    assert corrections(acc, reg) == [
        ("HostingRestored", "2020-06-15", "the account left the free plan")
    ]


def test_lifting_the_rule_restores_hosting() -> None:
    acc, reg = account(plan="free"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    corrections(acc, reg)
    rule_off(reg, FREE_HOSTING_RULE, "2020-10-01")
    assert corrections(acc, reg) == [
        ("HostingRestored", "2020-10-01", f"{FREE_HOSTING_RULE} lifted")
    ]


def test_a_rule_recorded_ahead_of_its_time_revokes_from_its_effective_time() -> None:
    acc, reg = account(plan="free"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2021-01-01", recorded="2020-08-03")
    assert corrections(acc, reg) == [("HostingRevoked", "2021-01-01", REVOKED)]
    assert fold_account(acc.facts, at=t("2020-12-31")).rule_revocation is None


def test_a_backdated_rule_revokes_only_while_the_account_was_free() -> None:
    acc, reg = account(plan="free"), region()
    acc.add("SubscriptionOpened", "2020-06-01", plan="pro", channel="online")
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19", recorded="2020-08-01")
    assert corrections(acc, reg) == [
        ("HostingRevoked", "2020-05-19", REVOKED),
        ("HostingRestored", "2020-06-01", "the account left the free plan"),
    ]


def test_a_manual_revocation_is_not_touched() -> None:
    acc, reg = account(plan="free"), region()
    manual = acc.add("HostingRevoked", "2020-03-01", reason="abuse")
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    rule_off(reg, FREE_HOSTING_RULE, "2020-06-01")
    corrections(acc, reg)
    assert fold_account(acc.facts, at=t("2020-07-01")).manual_revocation is manual


def test_nothing_to_do_without_the_rule_or_rule_caused_events() -> None:
    acc = account(plan="free")
    acc.add("HostingRevoked", "2020-03-01", reason="abuse")
    assert hosting_corrections(acc.facts, [], NOW) == []


def test_running_it_twice_records_nothing_the_second_time() -> None:
    acc, reg = account(plan="free"), region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    rule_off(reg, FREE_HOSTING_RULE, "2020-06-19")
    assert len(corrections(acc, reg)) == 2
    assert corrections(acc, reg) == []


# -- properties ------------------------------------------------------------------------------

DAY0 = t("2020-01-01")


def _day(n: int) -> str:
    return (DAY0 + timedelta(days=n)).isoformat()


#: Plan changes of one account: (opens a paid subscription?, effective day).
PLAN_CHANGES = st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=6)
#: Days on which the rule switches: on, off, on, ... in effective order.
SWITCH_DAYS = st.lists(st.integers(0, 40), max_size=5, unique=True).map(sorted)


def _world(
    registered: int, paid: bool, changes: list[tuple[bool, int]], switches: list[int]
) -> tuple[History, History]:
    acc = account(plan="pro" if paid else "free", on=_day(registered), recorded=_day(0))
    for opens, day in changes:
        if opens:
            acc.add("SubscriptionOpened", _day(day), _day(0), plan="pro", channel="online")
        else:
            acc.add("SubscriptionClosed", _day(day), _day(0), reason=None)
    reg = region()
    for i, day in enumerate(switches):
        (rule_on if i % 2 == 0 else rule_off)(reg, FREE_HOSTING_RULE, _day(day), _day(0))
    return acc, reg


@settings(max_examples=30, deadline=None, database=None)  # no I/O, not even hypothesis's
@given(
    registered=st.integers(0, 40),
    paid=st.booleans(),
    changes=PLAN_CHANGES,
    switches=SWITCH_DAYS,
)
def test_after_the_corrections_the_history_agrees_with_rule_3_and_again_records_nothing(
    registered: int, paid: bool, changes: list[tuple[bool, int]], switches: list[int]
) -> None:
    acc, reg = _world(registered, paid, changes, switches)
    acc.extend(hosting_corrections(acc.facts, reg.facts, NOW))
    assert hosting_corrections(acc.facts, reg.facts, NOW) == []
    for at in sorted({f.effective_at for f in (*acc.facts, *reg.facts)}):  # states change only then
        state = fold_account(acc.facts, at)
        rule = FREE_HOSTING_RULE in fold_region("CN", reg.facts, at).rules_on
        should = state.registration is not None and state.plan == "free" and rule
        assert (state.rule_revocation is not None) == should, f"at {at}"


def test_the_fan_out_direct_path_equals_the_folding_one() -> None:
    rng = random.Random(7)
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    day = timedelta(days=1)
    for _ in range(500):
        switches: list[Fact] = []
        on = False
        times = sorted(rng.sample(range(0, 40), rng.randint(0, 5)))
        for version, d in enumerate(times, 2):
            kind = "RegionRuleLifted" if on else "RegionRuleApplied"
            data = {"rule": "free_hosting_suspended"}
            recorded = t0 + rng.choice([0, 1, 50]) * day
            switches.append(Fact("region:CN", kind, version, t0 + d * day, recorded, data))
            on = not on
        region_facts = [Fact("region:CN", "RegionOpened", 1, t0, t0, {"region": "CN"})]
        region_facts += switches
        r = t0 + rng.randint(0, 40) * day
        registered = Fact(
            "account:x",
            "AccountRegistered",
            1,
            r,
            r + rng.choice([0, 1, 60]) * day,
            {"region": "CN", "plan": rng.choice(["free", "free", "pro"]), "channel": "online"},
        )
        recorded_at = t0 + 100 * day
        expected = FreeHostingSwitches(free_hosting_switches(region_facts)).folded(
            [registered], recorded_at
        )
        assert FreeHostingSwitches(switches).registration_only(registered, recorded_at) == expected
        assert hosting_corrections([registered], region_facts, recorded_at) == expected
