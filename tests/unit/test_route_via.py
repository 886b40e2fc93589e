"""Rule 10 (`route_via:R`, DOMAIN.md "Where a meeting's data may travel"), on states folded in
memory, one clause per test: after rules 1 and 7; the account's own region; R isolated by
`data_centre_isolated`; a paid account's choice (the last one in force replaces earlier
ones); a free account or no choice. Also the capability's name (`route_via_region`,
`check_capability`, `all_capabilities`) and `choose_data_regions`' refusals on the aggregate.
"""

from __future__ import annotations

import pytest

from entitlements.domain.account import Account
from entitlements.domain.region import RegionRules
from entitlements.domain.rules import (
    CAPABILITIES,
    ISOLATION_RULE,
    Rejected,
    UnknownCapability,
    all_capabilities,
    capability_region,
    check_capability,
    decide,
    fold_account,
    fold_region,
    route_via_region,
)
from tests.unit.domain_facts import History, account, region, rule_off, rule_on, t


def via(
    capability: str,
    acc: History,
    target: History,
    at: str = "2020-06-01",
    known: str | None = None,
) -> tuple[bool, str, list[str]]:
    """The answer of `capability` (a route_via:R) with R's own events, as a check takes them."""
    k = t(known) if known is not None else None
    state = fold_account(acc.facts, t(at), k)
    v = decide(capability, state, fold_region(target.code, target.facts, t(at), k))
    assert v.value is None  # a boolean
    return v.allowed, v.reason, [f.type for f in v.because]


def choose(acc: History, on: str, *codes: str, recorded: str | None = None) -> None:
    acc.add("DataRegionsChosen", on, recorded, regions=list(codes))


# -- the capability's name ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["route_via:CN", "route_via:HK", "route_via:ZZ"])
def test_route_via_names_any_two_letter_region(name: str) -> None:
    assert route_via_region(name) == name[-2:]
    assert check_capability(name) == name
    assert capability_region(name, "US") == name[-2:]


@pytest.mark.parametrize(
    "name",
    ["route_via:", "route_via:cn", "route_via:CHN", "route_via:C1", "route_via:ÄÖ", "via:CN"],
)
def test_anything_else_is_an_unknown_capability_naming_itself(name: str) -> None:
    assert route_via_region(name) is None
    with pytest.raises(UnknownCapability, match="route_via:R"):
        check_capability(name)
    with pytest.raises(UnknownCapability):
        decide(name, fold_account(account().facts), fold_region("CN", region().facts))


def test_the_other_capabilities_are_answered_from_the_accounts_own_region() -> None:
    assert capability_region("host", "US") == "US"


def test_capabilities_lists_route_via_for_every_region_given_once_in_code_order() -> None:
    assert all_capabilities(["US", "CN", "US"]) == (*CAPABILITIES, "route_via:CN", "route_via:US")


# -- rules 1 and 7 first --------------------------------------------------------------------


def test_before_registration_no_region_is_allowed_even_its_own() -> None:
    acc = account(region="US", on="2020-03-01")
    allowed, reason, _ = via("route_via:US", acc, region("US"), at="2020-02-01")
    assert not allowed and reason.startswith("registration takes effect")


def test_a_suspended_account_may_route_nowhere() -> None:
    acc = account(region="US", plan="pro")
    acc.add("AccountSuspended", "2020-05-01", jurisdiction="platform", reason="abuse")
    assert via("route_via:US", acc, region("US")) == (
        False,
        "account suspended (jurisdiction platform): abuse",
        ["AccountSuspended"],
    )


# -- the account's own region ----------------------------------------------------------------


def test_the_accounts_own_region_is_always_allowed_isolated_or_not_chosen() -> None:
    cn = region("CN")
    rule_on(cn, ISOLATION_RULE, "2020-04-18")
    acc = account(region="CN", plan="pro", channel="online")
    choose(acc, "2020-05-01", "US")
    assert via("route_via:CN", acc, cn) == (
        True,
        "CN is the account's own region",
        ["AccountRegistered"],
    )


# -- isolation -------------------------------------------------------------------------------


def test_an_isolated_region_carries_no_other_regions_meetings_even_chosen_ones() -> None:
    cn = region("CN")
    switch = rule_on(cn, ISOLATION_RULE, "2020-04-18", recorded="2020-04-14")
    acc = account(region="US", plan="enterprise", channel="direct")
    choose(acc, "2020-04-01", "CN", "US")
    allowed, reason, because = via("route_via:CN", acc, cn, at="2020-04-18")
    assert (allowed, because) == (False, ["RegionRuleApplied"])
    assert reason == "data_centre_isolated in CN: its data centres carry only CN's own accounts"
    assert via("route_via:CN", acc, cn, at="2020-04-17")[0]  # before it takes effect
    assert via("route_via:CN", acc, cn, at="2020-04-20", known="2020-04-13")[0]  # not yet known
    assert switch.recorded_at < switch.effective_at


def test_lifting_the_isolation_allows_again_and_cites_the_lift() -> None:
    cn = region("CN")
    rule_on(cn, ISOLATION_RULE, "2020-04-18")
    rule_off(cn, ISOLATION_RULE, "2020-09-01")
    acc = account(region="US")
    assert not via("route_via:CN", acc, cn, at="2020-08-31")[0]
    assert via("route_via:CN", acc, cn, at="2020-09-01") == (
        True,
        "CN is not isolated and no data regions are chosen",
        ["RegionRuleLifted"],
    )


def test_another_regions_rules_do_not_isolate() -> None:
    cn = region("CN")
    rule_on(cn, "free_hosting_suspended", "2020-04-18")
    assert via("route_via:CN", account(region="US"), cn)[0]


# -- a paid account's choice -----------------------------------------------------------------


def test_a_paid_choice_allows_exactly_the_chosen_regions() -> None:
    acc = account(region="US", plan="pro")
    choose(acc, "2020-04-18", "US", "DE")
    assert via("route_via:DE", acc, region("DE")) == (
        True,
        "DE is among the chosen data regions: US, DE",
        ["DataRegionsChosen", "AccountRegistered"],
    )
    assert via("route_via:HK", acc, History("region:HK")) == (
        False,
        "HK is not among the chosen data regions: US, DE",
        ["DataRegionsChosen", "AccountRegistered"],
    )


def test_a_choice_not_listing_the_own_region_still_allows_it() -> None:
    acc = account(region="US", plan="pro")
    choose(acc, "2020-04-18", "DE")
    assert via("route_via:US", acc, region("US"))[0]


def test_the_last_choice_in_force_replaces_earlier_ones() -> None:
    acc = account(region="DE", plan="pro")
    choose(acc, "2020-05-01", "US")
    choose(acc, "2020-06-01", "HK")
    assert via("route_via:US", acc, region("US"), at="2020-05-15")[0]
    assert not via("route_via:US", acc, region("US"), at="2020-06-15")[0]
    assert via("route_via:HK", acc, History("region:HK"), at="2020-06-15")[0]


def test_a_backdated_choice_applies_from_its_effective_time_once_known() -> None:
    acc = account(region="DE", plan="pro")
    choose(acc, "2020-05-01", "US", recorded="2020-07-01")
    assert via("route_via:HK", acc, History("region:HK"), at="2020-06-01", known="2020-06-30")[0]
    assert not via("route_via:HK", acc, History("region:HK"), at="2020-06-01")[0]


def test_before_any_choice_every_region_not_isolated_is_allowed() -> None:
    acc = account(region="DE", plan="business", channel="online")
    choose(acc, "2020-05-01", "US")
    assert via("route_via:HK", acc, History("region:HK"), at="2020-04-30") == (
        True,
        "HK is not isolated and no data regions are chosen",
        [],
    )


# -- the choice and the plan -----------------------------------------------------------------


def test_a_choice_stops_applying_when_the_account_leaves_the_paid_plans() -> None:
    acc = account(region="DE", plan="pro")
    choose(acc, "2020-05-01", "DE", "US")
    acc.add("SubscriptionClosed", "2020-07-01", reason="lapsed")
    allowed, reason, because = via("route_via:HK", acc, History("region:HK"), at="2020-07-02")
    assert allowed
    assert reason == (
        "HK is not isolated; the chosen data regions apply to paid plans only "
        "(now on the free plan)"
    )
    assert because == ["DataRegionsChosen", "SubscriptionClosed"]


def test_a_choice_applies_again_when_the_account_returns_to_a_paid_plan() -> None:
    acc = account(region="DE", plan="pro")
    choose(acc, "2020-05-01", "DE", "US")
    acc.add("SubscriptionClosed", "2020-07-01")
    acc.add("SubscriptionOpened", "2020-08-01", plan="business", channel="online", partner=None)
    assert via("route_via:HK", acc, History("region:HK"), at="2020-07-15")[0]
    assert not via("route_via:HK", acc, History("region:HK"), at="2020-08-02")[0]
    assert via("route_via:US", acc, region("US"), at="2020-08-02")[0]


def test_a_free_account_without_a_choice_may_route_anywhere_not_isolated() -> None:
    assert via("route_via:HK", account(region="US"), History("region:HK"))[0]


# -- choose_data_regions on the aggregate ----------------------------------------------------


def rules(code: str, *isolated_on: str) -> RegionRules:
    reg = region(code)
    for on in isolated_on:
        rule_on(reg, ISOLATION_RULE, on)
    return RegionRules(code, tuple(reg.facts))


def signed_up(plan: str = "pro", channel: str = "online", code: str = "DE") -> Account:
    return Account.register(
        "de-1", rules(code), plan, channel, None, t("2020-01-08"), t("2020-01-08")
    )


def test_a_paid_account_records_its_choice_in_the_order_given() -> None:
    a = signed_up()
    a.choose_data_regions([rules("DE"), rules("US")], t("2020-05-01"), t("2020-05-01"))
    chosen = a.facts[-1]
    assert (chosen.type, chosen.data["regions"]) == ("DataRegionsChosen", ["DE", "US"])
    assert fold_account(a.facts).data_regions is chosen


def test_a_free_account_may_not_choose() -> None:
    a = signed_up(plan="free")
    with pytest.raises(Rejected, match="on the free plan at 2020-04-20.*only a paid plan"):
        a.choose_data_regions([rules("US")], t("2020-04-20"), t("2020-04-20"))


def test_the_plan_is_the_one_at_the_choices_effective_time() -> None:
    a = signed_up()
    a.close_subscription("lapsed", t("2020-07-01"), t("2020-03-01"))
    a.choose_data_regions([rules("US")], t("2020-06-01"), t("2020-03-02"))  # still pro then
    with pytest.raises(Rejected, match="free plan at 2020-07-02"):
        a.choose_data_regions([rules("US")], t("2020-07-02"), t("2020-03-03"))


def test_a_suspended_account_may_not_choose() -> None:
    a = signed_up()
    a.suspend("platform", "abuse", t("2020-06-01"), t("2020-06-01"))
    with pytest.raises(Rejected, match="suspended at 2020-06-02"):
        a.choose_data_regions([rules("US")], t("2020-06-02"), t("2020-06-02"))


def test_an_isolated_region_other_than_its_own_may_not_be_chosen() -> None:
    a = signed_up()
    cn = rules("CN", "2020-04-18")
    with pytest.raises(Rejected, match="CN is data_centre_isolated at 2020-05-01"):
        a.choose_data_regions([rules("DE"), cn], t("2020-05-01"), t("2020-05-01"))
    a.choose_data_regions([cn], t("2020-04-17"), t("2020-05-01"))  # before it takes effect


def test_its_own_region_may_be_chosen_while_isolated() -> None:
    a = signed_up(plan="enterprise", channel="direct", code="CN")
    a.choose_data_regions([rules("CN", "2020-04-18")], t("2020-05-01"), t("2020-05-01"))


def test_a_choice_before_the_registration_is_rejected() -> None:
    with pytest.raises(Rejected, match="before account de-1 was registered"):
        signed_up().choose_data_regions([rules("US")], t("2020-01-01"), t("2020-05-01"))
