"""The Account aggregate in memory: each command is validated against the account's state at
its own effective time (as known when it is recorded) and either raises `Rejected` with the
reason, recording nothing, or records its event with both clocks and who asked. No store:
the region is read from Facts (`RegionRules`), events are taken with `collect_events`.
"""

from __future__ import annotations

from typing import Any

import pytest

from entitlements.domain.account import Account, account_uuid
from entitlements.domain.region import RegionRules
from entitlements.domain.rules import FREE_HOSTING_RULE, Rejected, Who
from tests.unit.domain_facts import History, region, rule_on, t

WHO: Who = {"actor": "ops@example.com", "command_id": "cmd-1"}
LATER: Who = {"actor": "sales", "command_id": "cmd-2"}


def rules(reg: History | None = None) -> RegionRules:
    return RegionRules("CN", (reg or region()).facts)


def sign_up(
    plan: str = "free",
    channel: str = "online",
    partner: str | None = None,
    reg: History | None = None,
    on: str = "2020-01-10",
) -> Account:
    return Account.register("u-1", rules(reg), plan, channel, partner, t(on), t(on), WHO)


def recorded(account: Account) -> list[tuple[str, dict[str, Any]]]:
    """The events recorded since the last call: (type, attributes without the library's)."""
    skip = {"originator_id", "originator_version", "timestamp", "originator_topic"}
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if k not in skip})
        for e in account.collect_events()
    ]


def types(account: Account) -> list[str]:
    return [name for name, _ in recorded(account)]


def partners(*names: str) -> History:
    reg = region()
    for name in names:
        reg.add("PartnerAuthorized", "2020-01-01", partner=name)
    return reg


# -- register --------------------------------------------------------------------------------


def test_register_records_account_registered_with_both_clocks_and_who() -> None:
    a = Account.register(
        "u-1", rules(), "free", "online", None, t("2020-01-10"), t("2020-01-11"), WHO
    )
    assert recorded(a) == [
        (
            "AccountRegistered",
            {
                "account_id": "u-1",
                "region": "CN",
                "plan": "free",
                "channel": "online",
                "partner": None,
                "effective_at": t("2020-01-10"),
                "recorded_at": t("2020-01-11"),
                "actor": "ops@example.com",
                "command_id": "cmd-1",
            },
        )
    ]
    (fact,) = a.facts
    assert (fact.stream, fact.version, fact.data["actor"]) == ("account:u-1", 1, "ops@example.com")


def test_accounts_have_stable_ids_from_their_account_id() -> None:
    assert sign_up().id == account_uuid("u-1") == Account.create_id("u-1")
    assert account_uuid("u-1") != account_uuid("u-2")


def test_replaying_the_recorded_events_rebuilds_the_same_facts() -> None:
    a = sign_up(plan="pro")
    a.revoke_hosting("abuse", t("2020-02-01"), t("2020-02-01"), WHO)
    replayed: Account | None = None
    for e in a.collect_events():
        replayed = e.mutate(replayed)
    assert replayed is not None and replayed.facts == a.facts and replayed.version == 2


def test_registration_under_registration_suspended_is_recorded_as_suspended() -> None:
    reg = region()
    switch = rule_on(reg, "registration_suspended", "2020-05-19")
    a = sign_up(reg=reg, on="2020-06-01")
    (_, (name, event)) = recorded(a)
    assert name == "RegistrationSuspended"
    assert event["cause"] == {
        "rule": "registration_suspended",
        "region": "CN",
        "rule_event": switch.ref(),
    }
    assert (event["effective_at"], event["actor"]) == (t("2020-06-01"), "ops@example.com")


@pytest.mark.parametrize(("channel", "partner"), [("direct", None), ("partner", "Umeet")])
def test_enterprise_through_a_sales_channel_signs_up_under_registration_suspended(
    channel: str, partner: str | None
) -> None:
    reg = partners("Umeet")
    rule_on(reg, "registration_suspended", "2020-05-19")
    a = sign_up("enterprise", channel, partner, reg=reg, on="2020-06-01")
    assert types(a) == ["AccountRegistered"]


@pytest.mark.parametrize(
    ("plan", "channel", "rule", "reason"),
    [
        ("pro", "online", "online_subscriptions_closed", "the online channel is closed in CN"),
        ("enterprise", "direct", "direct_sales_closed", "the direct channel is closed in CN"),
    ],
)
def test_register_a_paid_plan_through_a_closed_channel_is_rejected(
    plan: str, channel: str, rule: str, reason: str
) -> None:
    reg = region()
    rule_on(reg, rule, "2020-06-01")
    with pytest.raises(Rejected, match=reason):
        sign_up(plan, channel, reg=reg, on="2020-06-01")


def test_register_free_while_online_subscriptions_are_closed_is_not_a_purchase() -> None:
    reg = region()
    rule_on(reg, "online_subscriptions_closed", "2020-06-01")
    assert types(sign_up("free", "online", reg=reg, on="2020-06-01")) == ["AccountRegistered"]


def test_register_through_an_unauthorized_partner_is_rejected() -> None:
    with pytest.raises(Rejected, match="partner 'Nobody' is not authorized in CN"):
        sign_up("pro", "partner", "Nobody", reg=partners("Umeet"))


def test_register_free_through_a_sales_channel_is_rejected() -> None:
    with pytest.raises(Rejected, match="a free plan is only available online, not through direct"):
        sign_up("free", "direct")


def test_rejections_come_before_the_registration_suspension() -> None:
    reg = region()
    rule_on(reg, "registration_suspended", "2020-05-19")
    with pytest.raises(Rejected, match="a free plan is only available online"):
        sign_up("free", "direct", reg=reg, on="2020-06-01")


def test_a_channel_rule_counts_only_from_its_effective_time() -> None:
    reg = region()
    rule_on(reg, "direct_sales_closed", "2020-08-23", recorded="2020-08-03")
    assert types(sign_up("pro", "direct", reg=reg, on="2020-08-22")) == ["AccountRegistered"]
    with pytest.raises(Rejected):
        sign_up("pro", "direct", reg=reg, on="2020-08-23")


# -- approve_registration --------------------------------------------------------------------


def pending_sign_up(reg: History | None = None) -> Account:
    reg = reg or region()
    rule_on(reg, "registration_suspended", "2020-05-19")
    a = sign_up(reg=reg, on="2020-06-01")
    a.collect_events()
    return a


def test_approval_sets_enterprise_and_the_sales_channel() -> None:
    reg = partners("Umeet")
    a = pending_sign_up(reg)
    a.approve_registration(
        rules(reg), "enterprise", "partner", "Umeet", t("2020-06-05"), t("2020-06-06"), LATER
    )
    ((name, event),) = recorded(a)
    assert name == "RegistrationApproved"
    assert (event["plan"], event["channel"], event["partner"]) == ("enterprise", "partner", "Umeet")
    assert (event["effective_at"], event["recorded_at"]) == (t("2020-06-05"), t("2020-06-06"))
    assert (event["actor"], event["command_id"]) == ("sales", "cmd-2")
    state = a.state_at()
    assert state.registration_suspended is None and state.plan == "enterprise"


def test_approving_a_registration_that_is_not_suspended_is_rejected() -> None:
    a = sign_up()
    with pytest.raises(Rejected, match="registration of u-1 is not suspended at 2020-02-01"):
        a.approve_registration(
            rules(), "enterprise", "direct", None, t("2020-02-01"), t("2020-02-01")
        )


def test_approval_through_a_closed_channel_is_rejected() -> None:
    reg = region()
    rule_on(reg, "direct_sales_closed", "2020-05-01")
    a = pending_sign_up(reg)
    with pytest.raises(Rejected, match="the direct channel is closed in CN"):
        a.approve_registration(
            rules(reg), "enterprise", "direct", None, t("2020-06-05"), t("2020-06-05")
        )


def test_approval_through_an_unauthorized_partner_is_rejected() -> None:
    a = pending_sign_up()
    with pytest.raises(Rejected, match="partner 'Umeet' is not authorized in CN"):
        a.approve_registration(
            rules(), "enterprise", "partner", "Umeet", t("2020-06-05"), t("2020-06-05")
        )


# -- subscriptions and channel ---------------------------------------------------------------


def test_open_subscription_records_plan_and_channel() -> None:
    a = sign_up()
    a.collect_events()
    a.open_subscription(rules(), "business", "online", None, t("2020-02-01"), t("2020-02-01"), WHO)
    ((name, event),) = recorded(a)
    assert (name, event["plan"], event["channel"]) == ("SubscriptionOpened", "business", "online")
    assert a.state_at().plan == "business"


def test_open_subscription_while_suspended_is_rejected() -> None:
    a = sign_up()
    a.suspend("platform", "fraud", t("2020-02-01"), t("2020-02-01"))
    with pytest.raises(Rejected, match="account u-1 is suspended at 2020-03-01"):
        a.open_subscription(rules(), "pro", "online", None, t("2020-03-01"), t("2020-03-01"))


def test_open_subscription_while_the_registration_is_suspended_is_rejected() -> None:
    a = pending_sign_up()
    with pytest.raises(Rejected, match="registration of u-1 is suspended: approve it first"):
        a.open_subscription(rules(), "pro", "online", None, t("2020-06-05"), t("2020-06-05"))


def test_open_subscription_through_a_closed_channel_is_rejected() -> None:
    reg = region()
    rule_on(reg, "online_subscriptions_closed", "2020-06-01")
    a = sign_up(reg=reg)
    with pytest.raises(Rejected, match="the online channel is closed in CN"):
        a.open_subscription(rules(reg), "pro", "online", None, t("2020-06-02"), t("2020-06-02"))


def test_a_command_sees_a_future_effective_rule_recorded_before_it() -> None:
    reg = region()
    a = sign_up(reg=reg)
    rule_on(reg, "direct_sales_closed", "2020-08-23", recorded="2020-08-03")
    with pytest.raises(Rejected, match="direct channel is closed"):
        a.open_subscription(rules(reg), "pro", "direct", None, t("2020-08-24"), t("2020-08-04"))


def test_close_subscription_returns_to_the_free_plan() -> None:
    a = sign_up("pro", "direct")
    a.collect_events()
    a.close_subscription("too expensive", t("2020-03-01"), t("2020-03-01"), WHO)
    assert types(a) == ["SubscriptionClosed"]
    assert (a.state_at().plan, a.state_at().channel) == ("free", "online")


def test_closing_a_free_plan_is_rejected() -> None:
    with pytest.raises(Rejected, match="account u-1 is already on the free plan at 2020-03-01"):
        sign_up().close_subscription(None, t("2020-03-01"), t("2020-03-01"))


def test_a_suspended_account_may_still_close_its_subscription() -> None:
    a = sign_up("pro", "direct")
    a.suspend("platform", "fraud", t("2020-02-01"), t("2020-02-01"))
    a.close_subscription(None, t("2020-03-01"), t("2020-03-01"))
    assert a.state_at().plan == "free"


def test_move_to_an_authorized_partner() -> None:
    reg = partners("Umeet")
    a = sign_up("pro", "direct", reg=reg)
    a.collect_events()
    a.move_to_partner(rules(reg), "Umeet", t("2020-09-01"), t("2020-09-01"), WHO)
    assert types(a) == ["MovedToPartner"]
    assert (a.state_at().channel, a.state_at().partner) == ("partner", "Umeet")


def test_move_to_an_unauthorized_partner_is_rejected() -> None:
    a = sign_up("pro", "direct")
    with pytest.raises(Rejected, match="partner 'Umeet' is not authorized in CN at 2020-09-01"):
        a.move_to_partner(rules(), "Umeet", t("2020-09-01"), t("2020-09-01"))


def test_move_a_free_account_to_a_partner_is_rejected() -> None:
    reg = partners("Umeet")
    with pytest.raises(Rejected, match="on the free plan: nothing to move"):
        sign_up(reg=reg).move_to_partner(rules(reg), "Umeet", t("2020-09-01"), t("2020-09-01"))


def test_move_to_the_partner_the_account_already_has_is_rejected() -> None:
    reg = partners("Umeet")
    a = sign_up("pro", "partner", "Umeet", reg=reg)
    with pytest.raises(Rejected, match="already with 'Umeet'"):
        a.move_to_partner(rules(reg), "Umeet", t("2020-09-01"), t("2020-09-01"))


# -- hosting and suspension ------------------------------------------------------------------


def test_revoke_then_restore_hosting() -> None:
    a = sign_up("pro", "direct")
    a.collect_events()
    a.revoke_hosting("abuse", t("2020-03-01"), t("2020-03-01"), WHO)
    a.restore_hosting("appeal", t("2020-03-05"), t("2020-03-05"), LATER)
    events = recorded(a)
    assert [(n, e["reason"], e["cause"], e["actor"]) for n, e in events] == [
        ("HostingRevoked", "abuse", None, "ops@example.com"),
        ("HostingRestored", "appeal", None, "sales"),
    ]


def test_revoking_hosting_twice_is_rejected() -> None:
    a = sign_up()
    a.revoke_hosting("abuse", t("2020-03-01"), t("2020-03-01"))
    with pytest.raises(Rejected, match="hosting of u-1 is already revoked at 2020-03-02"):
        a.revoke_hosting("again", t("2020-03-02"), t("2020-03-02"))


def test_restoring_hosting_without_a_manual_revocation_is_rejected() -> None:
    with pytest.raises(Rejected, match="no manual hosting revocation of u-1 is in force"):
        sign_up().restore_hosting("why", t("2020-03-01"), t("2020-03-01"))


def test_restore_hosting_does_not_lift_a_rule_caused_revocation() -> None:
    reg = region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    a = sign_up(reg=reg)
    assert a.reconcile_hosting(rules(reg), t("2020-05-19")) == 1
    with pytest.raises(Rejected, match="a rule-caused one ends with the rule or the free plan"):
        a.restore_hosting("appeal", t("2020-06-01"), t("2020-06-01"))


def test_hosting_can_be_revoked_while_the_account_is_suspended() -> None:
    a = sign_up()
    a.suspend("platform", "fraud", t("2020-02-01"), t("2020-02-01"))
    a.revoke_hosting("abuse", t("2020-03-01"), t("2020-03-01"))
    state = a.state_at()
    assert state.suspension is not None and state.manual_revocation is not None


@pytest.mark.parametrize("jurisdiction", ["platform", "CN"])
def test_suspend_records_the_jurisdiction_and_reason(jurisdiction: str) -> None:
    a = sign_up()
    a.collect_events()
    a.suspend(jurisdiction, "request", t("2020-06-01"), t("2020-06-01"), WHO)
    ((name, event),) = recorded(a)
    assert (name, event["jurisdiction"], event["reason"]) == (
        "AccountSuspended",
        jurisdiction,
        "request",
    )


def test_suspension_under_another_regions_jurisdiction_is_rejected() -> None:
    a = Account.register(
        "activist-1", RegionRules("US", []), "pro", "online", None, t("2020-01-10"), t("2020-01-10")
    )
    with pytest.raises(Rejected, match="jurisdiction CN does not reach account activist-1 in US"):
        a.suspend("CN", "request", t("2020-06-01"), t("2020-06-01"))


def test_any_command_under_another_regions_jurisdiction_is_rejected() -> None:
    with pytest.raises(Rejected, match="never reaches outside its own jurisdiction"):
        sign_up().accept_request_from("US")
    sign_up().accept_request_from(None)  # none given: as the platform


def test_suspending_a_suspended_account_is_rejected() -> None:
    a = sign_up()
    a.suspend("platform", "fraud", t("2020-02-01"), t("2020-02-01"))
    with pytest.raises(Rejected, match="account u-1 is already suspended at 2020-02-02"):
        a.suspend("platform", "again", t("2020-02-02"), t("2020-02-02"))


def test_reinstate_ends_the_suspension() -> None:
    a = sign_up()
    a.suspend("platform", "fraud", t("2020-02-01"), t("2020-02-01"))
    a.collect_events()
    a.reinstate("error", t("2020-02-11"), t("2020-02-11"), WHO)
    assert types(a) == ["AccountReinstated"]
    assert a.state_at().suspension is None


def test_reinstating_an_account_that_is_not_suspended_is_rejected() -> None:
    with pytest.raises(Rejected, match="account u-1 is not suspended at 2020-02-01"):
        sign_up().reinstate("why", t("2020-02-01"), t("2020-02-01"))


# -- what every command shares ---------------------------------------------------------------


def test_a_command_effective_before_the_registration_is_rejected() -> None:
    a = sign_up(on="2020-01-10")
    with pytest.raises(Rejected, match="2020-01-09T00:00:00Z is before account u-1 was registered"):
        a.revoke_hosting("abuse", t("2020-01-09"), t("2020-01-11"))


def test_a_command_is_validated_at_its_own_effective_time() -> None:
    a = sign_up()
    a.revoke_hosting("abuse", t("2020-03-01"), t("2020-03-01"))
    with pytest.raises(
        Rejected, match="no manual hosting revocation of u-1 is in force at 2020-02"
    ):
        a.restore_hosting("backdated", t("2020-02-15"), t("2020-03-02"))
    a.restore_hosting("appeal", t("2020-03-02"), t("2020-03-02"))


def test_a_command_sees_events_recorded_before_it_that_take_effect_later() -> None:
    a = sign_up()
    a.suspend("platform", "fraud", t("2020-06-01"), t("2020-02-01"))  # ahead of its time
    with pytest.raises(Rejected, match="account u-1 is already suspended at 2020-07-01"):
        a.suspend("platform", "again", t("2020-07-01"), t("2020-02-02"))


def test_a_rejected_command_records_nothing() -> None:
    a = sign_up()
    a.collect_events()
    facts, version = list(a.facts), a.version
    with pytest.raises(Rejected):
        a.close_subscription(None, t("2020-03-01"), t("2020-03-01"))
    assert (recorded(a), a.facts, a.version) == ([], facts, version)


def test_reconcile_hosting_records_the_rule_as_the_accounts_own_events_once() -> None:
    reg = region()
    rule_on(reg, FREE_HOSTING_RULE, "2020-05-19")
    a = sign_up(reg=reg)
    a.collect_events()
    assert a.reconcile_hosting(rules(reg), t("2020-05-20"), WHO) == 1
    ((name, event),) = recorded(a)
    assert name == "HostingRevoked" and event["cause"]["rule"] == FREE_HOSTING_RULE
    assert (event["effective_at"], event["recorded_at"]) == (t("2020-05-19"), t("2020-05-20"))
    assert (event["actor"], event["command_id"]) == ("ops@example.com", "cmd-1")
    assert a.reconcile_hosting(rules(reg), t("2020-05-21"), WHO) == 0
    assert recorded(a) == []
