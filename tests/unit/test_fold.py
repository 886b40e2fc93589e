"""Facts, `in_force` and the folds (`fold_account`, `fold_region`) at (T, K): pure, in memory.

An event is in force at T when its effective_at <= T and known at K when its recorded_at
<= K; events with the same effective time apply in recorded order (DOMAIN.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from entitlements.domain.rules import Fact, fold_account, fold_region, in_force
from entitlements.domain.times import iso
from tests.unit.domain_facts import History, account, region, rule_off, rule_on, t

# -- Fact ------------------------------------------------------------------------------------


def test_facts_apply_in_effective_order_then_recorded_order() -> None:
    h = History("account:u-1")
    late = h.add("AccountSuspended", "2020-03-01", jurisdiction="platform", reason="x")
    first = h.add("AccountRegistered", "2020-01-01", region="CN", plan="free", channel="online")
    same_time = h.add("HostingRevoked", "2020-03-01", reason="y")
    assert h.facts == [first, late, same_time]
    assert sorted([same_time, late, first], key=lambda f: f.order) == [first, late, same_time]


def test_a_fact_reads_like_its_json_form() -> None:
    f = Fact(
        "account:u-1",
        "HostingRevoked",
        3,
        t("2020-05-19"),
        t("2020-05-20T08:30:00"),
        {"reason": "abuse", "actor": None},
        {"rule": "free_hosting_suspended"},
    )
    assert f["type"] == "HostingRevoked"
    assert f["effective_at"] == "2020-05-19T00:00:00Z"
    assert f["recorded_at"] == "2020-05-20T08:30:00Z"
    assert f["cause"] == {"rule": "free_hosting_suspended"}
    assert f["reason"] == "abuse"
    keys = {"stream", "type", "version", "effective_at", "recorded_at", "cause", "reason"}
    assert set(f.keys()) == keys  # a None in the data ("actor") is left out


def test_a_fact_cites_itself_by_stream_type_and_version() -> None:
    f = Fact("region:CN", "RegionRuleApplied", 2, t("2020-05-19"), t("2020-05-19"))
    assert f.ref() == {"stream": "region:CN", "type": "RegionRuleApplied", "version": 2}
    assert f.as_dict()["cause"] is None


def test_iso_writes_utc_with_z() -> None:
    assert iso(t("2020-08-23T12:00:00")) == "2020-08-23T12:00:00Z"


# -- in_force --------------------------------------------------------------------------------


def test_in_force_stops_at_the_first_fact_effective_after_t() -> None:
    h = account(on="2020-01-01")
    later = h.add("AccountSuspended", "2020-06-01", jurisdiction="platform", reason="x")
    assert list(in_force(h.facts, t("2020-05-31"), None)) == h.facts[:1]
    assert later in list(in_force(h.facts, t("2020-06-01"), None))


def test_in_force_skips_facts_recorded_after_k() -> None:
    h = account(on="2020-01-01")
    backdated = h.add("HostingRevoked", "2020-02-01", "2020-07-01", reason="x")
    assert backdated not in list(in_force(h.facts, None, t("2020-06-30")))
    assert backdated in list(in_force(h.facts, None, t("2020-07-01")))


def test_in_force_without_limits_is_everything() -> None:
    h = account()
    h.add("AccountSuspended", "2099-01-01", jurisdiction="platform", reason="later")
    assert list(in_force(h.facts, None, None)) == h.facts


# -- fold_account ----------------------------------------------------------------------------


def test_registration_sets_region_plan_and_channel() -> None:
    acc = fold_account(account(region="HK", plan="pro", channel="direct").facts)
    assert (acc.region, acc.plan, acc.channel, acc.partner) == ("HK", "pro", "direct", None)
    assert acc.registration is not None and acc.plan_set_by is acc.registration


def test_before_its_registration_an_account_has_none_but_knows_the_pending_one() -> None:
    h = account(on="2020-03-01")
    acc = fold_account(h.facts, at=t("2020-02-01"))
    assert acc.registration is None
    assert acc.not_yet is h.facts[0]


def test_a_registration_not_yet_known_at_k_is_pending() -> None:
    h = account(on="2020-01-01", recorded="2020-02-01")
    acc = fold_account(h.facts, at=t("2020-03-01"), known=t("2020-01-15"))
    assert acc.registration is None and acc.not_yet is h.facts[0]


def test_every_plan_setter_sets_plan_channel_and_partner() -> None:
    h = account(plan="free")
    opened = h.add(
        "SubscriptionOpened", "2020-02-01", plan="business", channel="partner", partner="P"
    )
    acc = fold_account(h.facts)
    assert (acc.plan, acc.channel, acc.partner, acc.plan_set_by) == (
        "business",
        "partner",
        "P",
        opened,
    )
    closed = h.add("SubscriptionClosed", "2020-03-01", reason=None)
    acc = fold_account(h.facts)
    assert (acc.plan, acc.channel, acc.partner, acc.plan_set_by) == ("free", "online", None, closed)


def test_approval_lifts_a_suspended_registration_and_sets_enterprise() -> None:
    h = account()
    pending = h.add("RegistrationSuspended", "2020-01-10", cause={"rule": "x"})
    assert fold_account(h.facts).registration_suspended is pending
    h.add("RegistrationApproved", "2020-02-01", plan="enterprise", channel="direct", partner=None)
    acc = fold_account(h.facts)
    assert acc.registration_suspended is None
    assert (acc.plan, acc.channel) == ("enterprise", "direct")


def test_moving_to_a_partner_keeps_the_plan() -> None:
    h = account(plan="pro")
    h.add("MovedToPartner", "2020-02-01", partner="Umeet")
    acc = fold_account(h.facts)
    assert (acc.plan, acc.channel, acc.partner) == ("pro", "partner", "Umeet")


def test_manual_and_rule_caused_revocations_are_separate_state() -> None:
    h = account()
    manual = h.add("HostingRevoked", "2020-02-01", reason="abuse")
    by_rule = h.add("HostingRevoked", "2020-03-01", cause={"rule": "free_hosting_suspended"})
    acc = fold_account(h.facts)
    assert (acc.manual_revocation, acc.rule_revocation) == (manual, by_rule)
    restore = h.add("HostingRestored", "2020-04-01", reason="appeal")
    acc = fold_account(h.facts)
    assert (acc.manual_revocation, acc.rule_revocation) == (None, by_rule)
    assert acc.last_restore is restore


def test_a_rule_caused_restore_ends_only_the_rule_caused_revocation() -> None:
    h = account()
    manual = h.add("HostingRevoked", "2020-02-01", reason="abuse")
    h.add("HostingRevoked", "2020-03-01", cause={"rule": "free_hosting_suspended"})
    h.add("HostingRestored", "2020-04-01", cause={"rule": "free_hosting_suspended"})
    acc = fold_account(h.facts)
    assert (acc.manual_revocation, acc.rule_revocation) == (manual, None)


def test_suspension_holds_until_reinstatement() -> None:
    h = account()
    s = h.add("AccountSuspended", "2020-06-01", jurisdiction="CN", reason="request")
    h.add("AccountReinstated", "2020-06-11", reason="error")
    assert fold_account(h.facts, at=t("2020-06-10")).suspension is s
    assert fold_account(h.facts, at=t("2020-06-11")).suspension is None


def test_fold_at_t_ignores_facts_effective_after_t() -> None:
    h = account(plan="free")
    h.add("SubscriptionOpened", "2020-09-01", "2020-01-20", plan="pro", channel="online")
    assert fold_account(h.facts, at=t("2020-08-31")).plan == "free"
    assert fold_account(h.facts, at=t("2020-09-01")).plan == "pro"


def test_fold_as_known_at_k_ignores_a_backdated_fact_recorded_after_k() -> None:
    h = account(plan="free")
    h.add("SubscriptionOpened", "2020-02-01", "2020-08-02", plan="pro", channel="online")
    assert fold_account(h.facts, at=t("2020-06-01"), known=t("2020-08-01")).plan == "free"
    assert fold_account(h.facts, at=t("2020-06-01"), known=t("2020-08-02")).plan == "pro"


def test_states_compare_by_identity_and_by_value_with_same_as() -> None:
    h = account()
    a, b = fold_account(h.facts), fold_account(h.facts)
    assert a != b and a.same_as(b)
    assert not a.same_as(fold_account(h.facts, at=t("2019-01-01")))
    assert not a.same_as(fold_region("CN", []))


# -- fold_region -----------------------------------------------------------------------------


def test_a_rule_is_on_from_its_switch_until_it_is_lifted() -> None:
    reg = region()
    on = rule_on(reg, "direct_sales_closed", "2020-08-23", "2020-08-03")
    off = rule_off(reg, "direct_sales_closed", "2021-01-01")
    assert fold_region("CN", reg.facts, at=t("2020-08-22")).rules_on == {}
    assert fold_region("CN", reg.facts, at=t("2020-08-23")).rules_on == {"direct_sales_closed": on}
    lifted = fold_region("CN", reg.facts, at=t("2021-01-01"))
    assert lifted.rules_on == {} and lifted.rules_lifted == {"direct_sales_closed": off}


def test_rule_switches_apply_in_effective_order_not_recorded_order() -> None:
    reg = region()
    rule_off(reg, "free_hosting_suspended", "2020-07-01", "2020-05-01")
    on = rule_on(reg, "free_hosting_suspended", "2020-05-19", "2020-06-01")  # backdated
    assert fold_region("CN", reg.facts, at=t("2020-06-01")).rules_on == {
        "free_hosting_suspended": on
    }
    assert fold_region("CN", reg.facts, at=t("2020-07-01")).rules_on == {}


def test_applying_a_rule_again_forgets_its_last_lift() -> None:
    reg = region()
    rule_on(reg, "online_subscriptions_closed", "2020-06-01")
    rule_off(reg, "online_subscriptions_closed", "2020-07-01")
    rule_on(reg, "online_subscriptions_closed", "2020-08-01")
    assert fold_region("CN", reg.facts).rules_lifted == {}


def test_partners_are_those_authorized_by_t_and_known_by_k() -> None:
    reg = region()
    p = reg.add("PartnerAuthorized", "2020-08-23", "2020-08-03", partner="Bizconf")
    assert fold_region("CN", reg.facts, at=t("2020-08-22")).partners == {}
    assert fold_region("CN", reg.facts, at=t("2020-08-23")).partners == {"Bizconf": p}
    assert fold_region("CN", reg.facts, at=t("2020-08-23"), known=t("2020-08-02")).partners == {}


def test_a_region_state_carries_its_code() -> None:
    assert fold_region("TW", []).code == "TW"


# -- properties ------------------------------------------------------------------------------

DAY0 = t("2020-01-01")
K = DAY0 + timedelta(days=30)
ACCOUNT_EVENTS = st.sampled_from(
    [
        ("SubscriptionOpened", {"plan": "pro", "channel": "online"}),
        ("SubscriptionClosed", {"reason": None}),
        ("HostingRevoked", {"reason": "r"}),
        ("HostingRestored", {"reason": "r"}),
        ("AccountSuspended", {"jurisdiction": "platform", "reason": "r"}),
        ("AccountReinstated", {"reason": "r"}),
        ("MovedToPartner", {"partner": "P"}),
    ]
)
Event = tuple[tuple[str, dict[str, Any]], int, int]  # (type and data), effective, recorded day
#: Facts known at K (recorded on days 0-30), and facts recorded after K (days 31-60).
KNOWN = st.lists(st.tuples(ACCOUNT_EVENTS, st.integers(0, 60), st.integers(0, 30)), max_size=8)
LATER = st.lists(st.tuples(ACCOUNT_EVENTS, st.integers(0, 60), st.integers(31, 60)), max_size=8)


def _day(n: int) -> str:
    return (DAY0 + timedelta(days=n)).isoformat()


def _add_all(h: History, events: list[Event]) -> History:
    for (type_, data), eff, rec in sorted(events, key=lambda e: e[2]):  # versions: recorded order
        h.add(type_, _day(eff), _day(rec), **data)
    return h


@settings(max_examples=30, deadline=None, database=None)  # no I/O, not even hypothesis's
@given(known=KNOWN, later=LATER, at=st.integers(0, 61))
def test_fold_account_as_known_at_k_ignores_facts_recorded_after_k(
    known: list[Event], later: list[Event], at: int
) -> None:
    as_known = _add_all(account(on=_day(4), recorded=_day(0)), known)
    everything = _add_all(_add_all(account(on=_day(4), recorded=_day(0)), known), later)
    T = DAY0 + timedelta(days=at)
    assert fold_account(everything.facts, T, K).same_as(fold_account(as_known.facts, T, K))
