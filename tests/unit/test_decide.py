"""`decide` and `decide_host`: rules 1-9 of DOMAIN.md ("Rules, evaluated at effective time T
with what was recorded by K") on states folded in memory, one behaviour per test. Also
`rule_cause`, `check_jurisdiction` and `with_who`.
"""

from __future__ import annotations

import pytest

from entitlements.domain.rules import (
    BOOLEAN_CAPABILITIES,
    CAPABILITIES,
    LIMIT_CAPABILITIES,
    LIMITS,
    PLANS,
    Rejected,
    UnknownCapability,
    check_jurisdiction,
    decide,
    decide_host,
    rule_cause,
    with_who,
)
from tests.unit.domain_facts import account, answer, region, rule_off, rule_on, states

FREE_HOSTING = {"rule": "free_hosting_suspended", "region": "CN"}


# -- rule 7: not registered, or not yet known ------------------------------------------------


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_before_registration_takes_effect_every_capability_is_denied(capability: str) -> None:
    acc = account(on="2020-03-01")
    v = answer(capability, acc, region(), at="2020-02-01")
    assert not v.allowed
    assert v.value == (0 if capability in LIMIT_CAPABILITIES else None)
    assert v.reason.startswith("registration takes effect at 2020-03-01T00:00:00Z")
    assert v.because == (acc.facts[0],)


def test_a_registration_not_yet_known_at_k_is_denied_and_says_so() -> None:
    acc = account(on="2020-01-01", recorded="2020-02-01")
    v = answer("join", acc, region(), at="2020-03-01", known="2020-01-15")
    assert not v.allowed
    assert "recorded at 2020-02-01T00:00:00Z: not in force or not yet known" in v.reason


def test_an_account_with_no_registration_is_not_registered_at_that_time() -> None:
    acc = account()
    acc.facts.clear()
    v = answer("host", acc, region())
    assert (v.allowed, v.reason, v.because) == (False, "not registered at that time", ())


# -- rule 1: suspended -----------------------------------------------------------------------


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_a_suspended_account_may_do_nothing(capability: str) -> None:
    acc, reg = account(plan="enterprise", channel="direct"), region()
    reg.add("PartnerAuthorized", "2020-01-01", partner="Umeet")
    s = acc.add("AccountSuspended", "2020-06-01", jurisdiction="CN", reason="gov request")
    v = answer(capability, acc, reg, at="2020-06-02")
    assert not v.allowed
    assert v.value == (0 if capability in LIMIT_CAPABILITIES else None)
    assert v.reason == "account suspended (jurisdiction CN): gov request"
    assert v.because == (s,)


def test_reinstatement_gives_back_what_the_account_had() -> None:
    acc = account(plan="pro")
    acc.add("AccountSuspended", "2020-06-01", jurisdiction="platform", reason="x")
    acc.add("AccountReinstated", "2020-06-11", reason="error")
    assert not answer("host", acc, region(), at="2020-06-10").allowed
    assert answer("host", acc, region(), at="2020-06-11").allowed


# -- rule 2: join ----------------------------------------------------------------------------


def test_join_is_allowed_for_any_registered_account_citing_its_registration() -> None:
    acc = account()
    v = answer("join", acc, region())
    assert (v.allowed, v.value, v.because) == (True, None, (acc.facts[0],))


def test_join_is_allowed_while_hosting_is_revoked_and_registration_is_pending() -> None:
    acc = account()
    acc.add("RegistrationSuspended", "2020-01-10", cause={"rule": "registration_suspended"})
    acc.add("HostingRevoked", "2020-01-11", reason="abuse")
    assert answer("join", acc, region()).allowed


# -- rule 3: host ----------------------------------------------------------------------------


def test_host_is_allowed_on_any_plan_citing_what_set_the_plan() -> None:
    acc = account(plan="free")
    opened = acc.add("SubscriptionOpened", "2020-02-01", plan="pro", channel="online")
    v = answer("host", acc, region())
    assert (v.allowed, v.reason, v.because) == (True, "may host on the pro plan", (opened,))


def test_host_is_denied_while_the_registration_is_suspended() -> None:
    acc = account()
    pending = acc.add(
        "RegistrationSuspended", "2020-06-01", cause={"rule": "registration_suspended"}
    )
    v = answer("host", acc, region())
    assert not v.allowed and v.because == (pending,)
    assert v.reason == (
        "registration suspended by registration_suspended in CN, pending sales approval"
    )


def test_host_is_allowed_again_once_the_registration_is_approved() -> None:
    acc = account()
    acc.add("RegistrationSuspended", "2020-06-01", cause={"rule": "registration_suspended"})
    acc.add("RegistrationApproved", "2020-06-05", plan="enterprise", channel="direct")
    assert answer("host", acc, region(), at="2020-06-05").allowed


def test_host_is_denied_while_a_manual_revocation_is_in_force_naming_its_reason() -> None:
    acc = account(plan="business", channel="direct")
    revoked = acc.add("HostingRevoked", "2020-03-01", reason="abuse report")
    v = answer("host", acc, region())
    assert (v.allowed, v.reason, v.because) == (False, "hosting revoked: abuse report", (revoked,))


def test_a_revocation_reason_is_quoted_whole_even_ending_in_colons() -> None:
    acc = account(plan="business", channel="direct")
    acc.add("HostingRevoked", "2020-03-01", reason="see ticket :smile: ")
    assert answer("host", acc, region()).reason == "hosting revoked: see ticket :smile: "


def test_a_restore_ends_a_manual_revocation_and_is_cited() -> None:
    acc = account(plan="pro")
    acc.add("HostingRevoked", "2020-03-01", reason="abuse")
    restore = acc.add("HostingRestored", "2020-03-05", reason="appeal")
    v = answer("host", acc, region())
    assert v.allowed and v.because == (acc.facts[0], restore)


def test_host_is_denied_while_a_rule_caused_revocation_is_in_force() -> None:
    acc = account(plan="free")
    revoked = acc.add("HostingRevoked", "2020-05-19", cause=FREE_HOSTING, reason="r")
    v = answer("host", acc, region())
    assert not v.allowed and v.because == (revoked,)
    assert v.reason == "hosting revoked by free_hosting_suspended in CN while on the free plan"


def test_both_revocations_are_named_when_both_are_in_force() -> None:
    acc = account(plan="free")
    manual = acc.add("HostingRevoked", "2020-03-01", reason="abuse")
    by_rule = acc.add("HostingRevoked", "2020-05-19", cause=FREE_HOSTING, reason="r")
    v = decide_host(states(acc, region())[0])
    assert v.because == (manual, by_rule)
    assert v.reason.startswith("hosting revoked: abuse; hosting revoked by free_hosting_suspended")


def test_host_follows_the_revocation_events_not_the_region_rule_directly() -> None:
    # The region's rule reaches hosting as the account's own events (see hosting_corrections):
    # a rule switched on with no HostingRevoked on the account does not deny by itself.
    acc, reg = account(plan="free"), region()
    rule_on(reg, "free_hosting_suspended", "2020-05-19")
    assert answer("host", acc, reg, at="2020-06-01").allowed


# -- rules 4-6: channels and partners --------------------------------------------------------


def test_subscribe_online_is_denied_while_online_subscriptions_are_closed() -> None:
    acc, reg = account(), region()
    closed = rule_on(reg, "online_subscriptions_closed", "2020-06-01")
    v = answer("subscribe_online", acc, reg, at="2020-06-01")
    assert (v.allowed, v.because) == (False, (closed,))
    assert v.reason == "online_subscriptions_closed in CN"


def test_subscribe_online_is_allowed_after_the_rule_is_lifted_citing_the_lift() -> None:
    acc, reg = account(), region()
    rule_on(reg, "online_subscriptions_closed", "2020-06-01")
    lifted = rule_off(reg, "online_subscriptions_closed", "2020-07-01")
    v = answer("subscribe_online", acc, reg, at="2020-07-01")
    assert (v.allowed, v.because) == (True, (lifted,))
    assert v.reason == "online_subscriptions_closed not in force in CN"


def test_subscribe_online_is_allowed_with_nothing_to_cite_when_never_closed() -> None:
    v = answer("subscribe_online", account(), region())
    assert (v.allowed, v.value, v.because) == (True, None, ())


def test_purchase_direct_is_denied_while_direct_sales_are_closed() -> None:
    acc, reg = account(plan="enterprise", channel="direct"), region()
    closed = rule_on(reg, "direct_sales_closed", "2020-08-23")
    v = answer("purchase_direct", acc, reg, at="2020-08-23")
    assert (v.allowed, v.reason, v.because) == (False, "direct_sales_closed in CN", (closed,))


def test_a_channel_rule_closes_only_its_own_channel() -> None:
    acc, reg = account(), region()
    rule_on(reg, "direct_sales_closed", "2020-08-23")
    assert answer("subscribe_online", acc, reg, at="2020-08-23").allowed


def test_purchase_via_partner_is_allowed_while_a_partner_is_authorized_naming_them() -> None:
    acc, reg = account(), region()
    a = reg.add("PartnerAuthorized", "2020-08-23", partner="Systec Umeet")
    b = reg.add("PartnerAuthorized", "2020-08-23", partner="Bizconf")
    v = answer("purchase_via_partner", acc, reg, at="2020-08-23")
    assert v.allowed and v.because == (a, b)  # in the order they were authorized
    assert v.reason == "authorized partners in CN: Bizconf, Systec Umeet"


def test_purchase_via_partner_is_denied_without_an_authorized_partner() -> None:
    v = answer("purchase_via_partner", account(), region())
    assert (v.allowed, v.reason) == (False, "no authorized partner in CN")


@pytest.mark.parametrize(
    "capability", ["subscribe_online", "purchase_direct", "purchase_via_partner"]
)
def test_purchases_are_denied_while_the_registration_is_suspended(capability: str) -> None:
    acc, reg = account(), region()
    reg.add("PartnerAuthorized", "2020-01-01", partner="Umeet")
    acc.add("RegistrationSuspended", "2020-01-10", cause={"rule": "registration_suspended"})
    v = answer(capability, acc, reg)
    assert not v.allowed and "pending sales approval" in v.reason


# -- rule 8: limits --------------------------------------------------------------------------


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("limit", LIMIT_CAPABILITIES)
def test_a_limit_is_the_plans_limit_while_hosting_is_allowed(plan: str, limit: str) -> None:
    acc = account(plan=plan, channel="online" if plan == "free" else "direct")
    v = answer(limit, acc, region())
    assert (v.allowed, v.value, v.reason) == (True, LIMITS[plan][limit], f"{plan} plan limit")


@pytest.mark.parametrize("limit", LIMIT_CAPABILITIES)
def test_a_limit_is_zero_where_host_is_not_allowed(limit: str) -> None:
    acc = account(plan="business", channel="direct")
    revoked = acc.add("HostingRevoked", "2020-03-01", reason="abuse")
    v = answer(limit, acc, region())
    assert (v.allowed, v.value, v.because) == (False, 0, (revoked,))
    assert v.reason == "no hosting, so no limit: hosting revoked: abuse"


@pytest.mark.parametrize("capability", BOOLEAN_CAPABILITIES)
def test_booleans_have_no_value(capability: str) -> None:
    assert answer(capability, account(plan="pro"), region()).value is None


def test_an_unknown_capability_is_an_error_listing_the_known_ones() -> None:
    acc, reg = states(account(), region())
    with pytest.raises(UnknownCapability, match="unknown capability 'fly': expected one of join"):
        decide("fly", acc, reg)


# -- rule 9: future-effective events ---------------------------------------------------------


def test_a_future_effective_rule_changes_the_answer_when_its_time_comes() -> None:
    acc, reg = account(plan="enterprise", channel="direct"), region()
    rule_on(reg, "direct_sales_closed", "2020-08-23", recorded="2020-08-03")
    known = "2020-08-03"  # nothing is recorded after the announcement
    assert answer("purchase_direct", acc, reg, at="2020-08-22T23:59:59", known=known).allowed
    assert not answer("purchase_direct", acc, reg, at="2020-08-23", known=known).allowed


def test_what_was_known_before_the_announcement_still_says_yes() -> None:
    acc, reg = account(plan="enterprise", channel="direct"), region()
    rule_on(reg, "direct_sales_closed", "2020-08-23", recorded="2020-08-03")
    assert answer("purchase_direct", acc, reg, at="2020-09-01", known="2020-08-02").allowed


# -- causes, jurisdiction, who ---------------------------------------------------------------


def test_a_rule_cause_names_the_rule_its_region_and_the_switch() -> None:
    reg = region("CN")
    switch = rule_on(reg, "free_hosting_suspended", "2020-05-19")
    assert rule_cause(switch) == {
        "rule": "free_hosting_suspended",
        "region": "CN",
        "rule_event": {"stream": "region:CN", "type": "RegionRuleApplied", "version": 2},
    }
    assert rule_cause(switch, switch) == rule_cause(switch)  # the switch is its own trigger


def test_a_rule_cause_names_a_different_trigger() -> None:
    switch = rule_on(region(), "free_hosting_suspended", "2020-05-19")
    closed = account().add("SubscriptionClosed", "2020-06-01", reason=None)
    assert rule_cause(switch, closed)["trigger"] == closed.ref()


@pytest.mark.parametrize("jurisdiction", [None, "platform", "CN"])
def test_the_platform_and_the_accounts_own_region_reach_the_account(
    jurisdiction: str | None,
) -> None:
    check_jurisdiction(jurisdiction, "CN", "u-1")


def test_a_jurisdiction_never_reaches_outside_its_own_region() -> None:
    with pytest.raises(Rejected) as e:
        check_jurisdiction("CN", "US", "activist-1")
    assert e.value.reason == (
        "jurisdiction CN does not reach account activist-1 in US: "
        "a government request never reaches outside its own jurisdiction"
    )


def test_with_who_keeps_only_what_is_known() -> None:
    assert with_who({"reason": "r"}, "ops", None) == {"reason": "r", "actor": "ops"}
    assert with_who({}, None, None) == {}
