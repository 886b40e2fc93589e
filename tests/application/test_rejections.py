"""Every rejection reason of the commands table in shared/spec/DOMAIN.md, one test each.

A rejected command is a result, not an error: its status is "rejected", its reason names
what is wrong, and it changes no account and no region: the only thing recorded is its entry
in the rejection log (one event, at the position the result reports), and the account's
history is as it was. Every command gives an explicit `recorded_at`, non-decreasing within a test.
"""

from __future__ import annotations

from typing import Any

import pytest

from entitlements import CommandResult, MalformedCommand, UnknownAccount
from entitlements.application.engine import Engine

# -- fixture and helpers -------------------------------------------------------------------


# `engine`: tests/application/conftest.py's, a fresh in-memory store (memory://).


def item(command: str, on: str, recorded: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"command": command, **fields, "effective_at": on, "recorded_at": recorded or on}


def attempt(
    engine: Engine, command: str, on: str, recorded: str | None = None, **fields: Any
) -> CommandResult:
    (result,) = engine.apply([item(command, on, recorded, **fields)])
    return result


def do(engine: Engine, command: str, on: str, recorded: str | None = None, **fields: Any) -> None:
    result = attempt(engine, command, on, recorded, **fields)
    assert result.status == "applied", f"{command} was rejected: {result.reason}"


def history(engine: Engine, account_id: str | None) -> list[dict[str, Any]] | None:
    if account_id is None:
        return None
    try:
        return engine.history(account_id)
    except UnknownAccount:
        return None


def rejected(
    engine: Engine, command: str, on: str, recorded: str | None = None, **fields: Any
) -> str:
    """Apply one command that must be rejected, changing nothing but the rejection log;
    its reason."""
    position = engine.position()
    before = history(engine, fields.get("account_id"))
    result = attempt(engine, command, on, recorded, **fields)
    assert result.status == "rejected", f"{command} was applied"
    assert result.reason
    assert engine.position() == position + 1, "a rejected command recorded more than its rejection"
    (recorded_event,) = engine.app.recorder.select_notifications(start=position + 1, limit=10)
    assert recorded_event.topic == "entitlements:CommandRejected"
    assert result.position == position + 1
    assert history(engine, fields.get("account_id")) == before
    (entry,) = [r for r in engine.rejections() if r["position"] == result.position]
    assert (entry["command"], entry["reason"]) == (command, result.reason)
    return result.reason


def register(
    engine: Engine,
    account_id: str,
    region: str = "CN",
    plan: str = "free",
    channel: str = "online",
    on: str = "2020-01-01",
    partner: str | None = None,
) -> None:
    do(engine, "register_account", on, **registration(account_id, region, plan, channel, partner))


def registration(
    account_id: str,
    region: str = "CN",
    plan: str = "free",
    channel: str = "online",
    partner: str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "account_id": account_id,
        "region": region,
        "plan": plan,
        "channel": channel,
    }
    if partner is not None:
        fields["partner"] = partner
    return fields


def rule(engine: Engine, region: str, name: str, on: str, recorded: str | None = None) -> None:
    do(engine, "apply_region_rule", on, recorded, region=region, rule=name)


def partner(engine: Engine, region: str, name: str, on: str) -> None:
    do(engine, "authorize_partner", on, region=region, partner=name)


def types(engine: Engine, account_id: str) -> list[str]:
    return [e["type"] for e in engine.history(account_id)]


# -- register_account ------------------------------------------------------------------------


def test_registering_an_existing_account_id_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US", plan="pro")

    reason = rejected(
        engine, "register_account", "2020-02-01", **registration("a1", region="CN", plan="free")
    )
    assert "exists" in reason


def test_registering_a_paid_plan_online_while_online_subscriptions_are_closed_is_rejected(
    engine: Engine,
) -> None:
    rule(engine, "CN", "online_subscriptions_closed", "2020-06-01")

    reason = rejected(
        engine, "register_account", "2020-06-02", **registration("a1", plan="pro", channel="online")
    )
    assert "online" in reason and "closed" in reason
    do(engine, "register_account", "2020-06-03", **registration("a2", plan="free"))


def test_registering_a_paid_plan_direct_while_direct_sales_are_closed_is_rejected(
    engine: Engine,
) -> None:
    rule(engine, "CN", "direct_sales_closed", "2020-08-23", recorded="2020-08-03")

    reason = rejected(
        engine,
        "register_account",
        "2020-08-24",
        "2020-08-04",
        **registration("a1", plan="enterprise", channel="direct"),
    )
    assert "direct" in reason and "closed" in reason
    # before the rule takes effect, the same registration is fine
    do(
        engine,
        "register_account",
        "2020-08-22",
        "2020-08-05",
        **registration("a2", plan="enterprise", channel="direct"),
    )


def test_registering_through_a_partner_not_authorized_in_the_region_is_rejected(
    engine: Engine,
) -> None:
    partner(engine, "CN", "Bizconf Communications", "2020-08-03")

    reason = rejected(
        engine,
        "register_account",
        "2020-08-25",
        **registration("a1", plan="enterprise", channel="partner", partner="Acme Reseller"),
    )
    assert "Acme Reseller" in reason and "authorized" in reason


def test_registering_a_free_plan_directly_is_rejected(engine: Engine) -> None:
    reason = rejected(
        engine,
        "register_account",
        "2020-01-01",
        **registration("a1", region="US", plan="free", channel="direct"),
    )
    assert "free" in reason and "online" in reason


def test_registering_a_free_plan_through_an_authorized_partner_is_rejected(
    engine: Engine,
) -> None:
    partner(engine, "CN", "Systec Umeet", "2020-08-03")

    reason = rejected(
        engine,
        "register_account",
        "2020-08-25",
        **registration("a1", plan="free", channel="partner", partner="Systec Umeet"),
    )
    assert "free" in reason


def test_a_partner_name_that_does_not_match_the_channel_is_malformed_not_rejected(
    engine: Engine,
) -> None:
    register(engine, "a0", region="US", plan="pro")
    position = engine.position()
    good = item("register_account", "2020-02-01", **registration("a1", region="US", plan="pro"))
    missing = item(
        "register_account",
        "2020-02-01",
        **registration("a2", region="CN", plan="enterprise", channel="partner"),
    )
    extra = item(
        "register_account",
        "2020-02-01",
        **registration("a3", region="US", plan="pro", channel="online", partner="Acme"),
    )

    for bad in (missing, extra):
        with pytest.raises(MalformedCommand) as error:
            engine.apply([good, bad])
        assert error.value.field == "partner"
        assert engine.position() == position  # the whole batch is refused


def test_registration_under_registration_suspended_is_recorded_as_suspended_not_rejected(
    engine: Engine,
) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    partner(engine, "CN", "Systec Umeet", "2020-05-20")

    for account_id, plan, channel in [
        ("free", "free", "online"),
        ("pro", "pro", "direct"),
        ("ent-online", "enterprise", "online"),
    ]:
        result = attempt(
            engine,
            "register_account",
            "2020-05-25",
            **registration(account_id, plan=plan, channel=channel),
        )
        assert result.status == "applied", result.reason
        assert types(engine, account_id) == ["AccountRegistered", "RegistrationSuspended"]
        suspended = engine.history(account_id)[1]
        assert suspended["cause"]["rule"] == "registration_suspended"
        assert not engine.check(account_id, "host", at="2020-05-26").allowed


def test_enterprise_through_a_sales_channel_is_not_suspended_by_registration_suspended(
    engine: Engine,
) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    partner(engine, "CN", "Systec Umeet", "2020-05-20")
    register(engine, "direct", plan="enterprise", channel="direct", on="2020-05-26")
    register(
        engine,
        "partner",
        plan="enterprise",
        channel="partner",
        partner="Systec Umeet",
        on="2020-05-27",
    )

    assert types(engine, "direct") == ["AccountRegistered"]
    assert types(engine, "partner") == ["AccountRegistered"]
    assert engine.check("partner", "host", at="2020-05-28").allowed


def test_domain_rejections_come_before_registration_suspended(engine: Engine) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    rule(engine, "CN", "online_subscriptions_closed", "2020-06-01")

    reason = rejected(
        engine, "register_account", "2020-06-02", **registration("a1", plan="pro", channel="online")
    )
    assert "online" in reason
    reason = rejected(
        engine,
        "register_account",
        "2020-06-03",
        **registration("a2", plan="free", channel="direct"),
    )
    assert "free" in reason


def test_lifting_registration_suspended_does_not_release_pending_registrations(
    engine: Engine,
) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")
    do(engine, "lift_region_rule", "2020-07-01", region="CN", rule="registration_suspended")

    assert types(engine, "p1") == ["AccountRegistered", "RegistrationSuspended"]
    assert not engine.check("p1", "host", at="2020-07-02").allowed
    reason = rejected(
        engine, "open_subscription", "2020-07-03", account_id="p1", plan="pro", channel="online"
    )
    assert "registration" in reason
    do(
        engine,
        "approve_registration",
        "2020-07-04",
        account_id="p1",
        plan="enterprise",
        channel="direct",
    )
    assert engine.check("p1", "host", at="2020-07-05").allowed


# -- approve_registration ---------------------------------------------------------------------


def test_approving_a_registration_that_is_not_suspended_is_rejected(engine: Engine) -> None:
    register(engine, "a1", plan="pro")

    reason = rejected(
        engine,
        "approve_registration",
        "2020-02-01",
        account_id="a1",
        plan="enterprise",
        channel="direct",
    )
    assert "not suspended" in reason


def test_approving_through_a_closed_channel_is_rejected(engine: Engine) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")
    rule(engine, "CN", "direct_sales_closed", "2020-08-23", recorded="2020-08-03")

    reason = rejected(
        engine,
        "approve_registration",
        "2020-08-24",
        account_id="p1",
        plan="enterprise",
        channel="direct",
    )
    assert "direct" in reason and "closed" in reason


def test_approving_through_a_partner_not_authorized_is_rejected(engine: Engine) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")
    partner(engine, "CN", "Systec Umeet", "2020-08-03")

    reason = rejected(
        engine,
        "approve_registration",
        "2020-08-04",
        account_id="p1",
        plan="enterprise",
        channel="partner",
        partner="Acme Reseller",
    )
    assert "Acme Reseller" in reason and "authorized" in reason


def test_approval_sets_the_plan_to_enterprise_and_the_channel_given(engine: Engine) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")
    partner(engine, "CN", "Suirui Zhumu Video Conference", "2020-08-03")
    do(
        engine,
        "approve_registration",
        "2020-10-15",
        account_id="p1",
        plan="enterprise",
        channel="partner",
        partner="Suirui Zhumu Video Conference",
    )

    approved = engine.history("p1")[-1]
    assert approved["type"] == "RegistrationApproved"
    assert (approved["plan"], approved["channel"], approved["partner"]) == (
        "enterprise",
        "partner",
        "Suirui Zhumu Video Conference",
    )
    assert engine.check("p1", "max_participants", at="2020-10-16").value == 500
    reason = rejected(
        engine,
        "move_to_partner",
        "2020-10-20",
        account_id="p1",
        partner="Suirui Zhumu Video Conference",
    )
    assert "already" in reason


# -- open_subscription -------------------------------------------------------------------------


def test_opening_a_subscription_on_a_suspended_account_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US")
    do(
        engine,
        "suspend_account",
        "2020-03-01",
        account_id="a1",
        jurisdiction="platform",
        reason="spam",
    )

    reason = rejected(
        engine, "open_subscription", "2020-03-02", account_id="a1", plan="pro", channel="online"
    )
    assert "suspended" in reason and "registration" not in reason


def test_opening_a_subscription_while_the_registration_is_suspended_is_rejected(
    engine: Engine,
) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")

    reason = rejected(
        engine,
        "open_subscription",
        "2020-05-26",
        account_id="p1",
        plan="enterprise",
        channel="direct",
    )
    assert "registration" in reason and "approve" in reason


def test_opening_a_subscription_through_a_closed_channel_is_rejected(engine: Engine) -> None:
    register(engine, "a1")
    rule(engine, "CN", "online_subscriptions_closed", "2020-06-01")

    reason = rejected(
        engine, "open_subscription", "2020-06-05", account_id="a1", plan="pro", channel="online"
    )
    assert "online" in reason and "closed" in reason


def test_opening_a_subscription_through_a_partner_not_authorized_is_rejected(
    engine: Engine,
) -> None:
    register(engine, "a1")

    reason = rejected(
        engine,
        "open_subscription",
        "2020-06-05",
        account_id="a1",
        plan="pro",
        channel="partner",
        partner="Acme Reseller",
    )
    assert "Acme Reseller" in reason and "authorized" in reason


# -- close_subscription ------------------------------------------------------------------------


def test_closing_a_subscription_on_the_free_plan_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US", plan="pro")
    do(engine, "close_subscription", "2020-03-01", account_id="a1", reason="not renewed")

    reason = rejected(engine, "close_subscription", "2020-04-01", account_id="a1")
    assert "free" in reason


def test_a_suspended_account_may_still_close_its_subscription(engine: Engine) -> None:
    register(engine, "a1", region="US", plan="business")
    do(engine, "suspend_account", "2020-03-01", account_id="a1", jurisdiction="US", reason="court")

    result = attempt(engine, "close_subscription", "2020-03-05", account_id="a1")
    assert result.status == "applied", result.reason
    assert types(engine, "a1")[-1] == "SubscriptionClosed"


# -- revoke_hosting / restore_hosting ------------------------------------------------------------


def test_revoking_hosting_when_a_manual_revocation_is_in_force_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US", plan="pro")
    do(engine, "revoke_hosting", "2020-03-01", account_id="a1", reason="abuse")

    reason = rejected(engine, "revoke_hosting", "2020-03-05", account_id="a1", reason="again")
    assert "already revoked" in reason


def test_restoring_hosting_when_no_revocation_is_in_force_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US", plan="pro")
    do(engine, "revoke_hosting", "2020-03-01", account_id="a1", reason="abuse")

    reason = rejected(
        engine, "restore_hosting", "2020-02-15", "2020-03-02", account_id="a1", reason="early"
    )
    assert "revocation" in reason


def test_restoring_hosting_does_not_lift_a_rule_caused_revocation(engine: Engine) -> None:
    register(engine, "a1")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")

    reason = rejected(engine, "restore_hosting", "2020-06-01", account_id="a1", reason="please")
    assert "manual" in reason
    assert not engine.check("a1", "host", at="2020-06-02").allowed


# -- move_to_partner ---------------------------------------------------------------------------


def test_moving_to_a_partner_not_yet_authorized_at_that_time_is_rejected(engine: Engine) -> None:
    register(engine, "a1", plan="enterprise", channel="direct")
    partner(engine, "CN", "Bizconf Communications", "2020-08-03")

    reason = rejected(
        engine,
        "move_to_partner",
        "2020-08-01",
        "2020-08-05",
        account_id="a1",
        partner="Bizconf Communications",
    )
    assert "not authorized" in reason
    reason = rejected(
        engine, "move_to_partner", "2020-09-02", account_id="a1", partner="Acme Reseller"
    )
    assert "Acme Reseller" in reason


def test_moving_a_free_account_to_a_partner_is_rejected(engine: Engine) -> None:
    register(engine, "a1")
    partner(engine, "CN", "Bizconf Communications", "2020-08-03")

    reason = rejected(
        engine, "move_to_partner", "2020-09-01", account_id="a1", partner="Bizconf Communications"
    )
    assert "free" in reason


def test_moving_to_the_partner_the_account_is_already_with_is_rejected(engine: Engine) -> None:
    register(engine, "a1", plan="enterprise", channel="direct")
    partner(engine, "CN", "Bizconf Communications", "2020-08-03")
    do(engine, "move_to_partner", "2020-09-01", account_id="a1", partner="Bizconf Communications")

    reason = rejected(
        engine, "move_to_partner", "2020-09-02", account_id="a1", partner="Bizconf Communications"
    )
    assert "already" in reason


# -- suspend_account / reinstate_account -----------------------------------------------------------


def test_a_government_request_never_suspends_an_account_outside_its_jurisdiction(
    engine: Engine,
) -> None:
    register(engine, "us-1", region="US", plan="pro")
    register(engine, "hk-1", region="HK")

    for account_id in ("us-1", "hk-1"):
        reason = rejected(
            engine,
            "suspend_account",
            "2020-06-07",
            account_id=account_id,
            jurisdiction="CN",
            reason="government request",
        )
        assert "jurisdiction" in reason
        assert engine.check(account_id, "join", at="2020-06-08").allowed


def test_a_suspension_within_the_accounts_jurisdiction_or_by_the_platform_is_applied(
    engine: Engine,
) -> None:
    register(engine, "cn-1")
    register(engine, "us-1", region="US", plan="pro")

    do(
        engine,
        "suspend_account",
        "2020-06-07",
        account_id="cn-1",
        jurisdiction="CN",
        reason="government request",
    )
    do(
        engine,
        "suspend_account",
        "2020-06-08",
        account_id="us-1",
        jurisdiction="platform",
        reason="spam reports",
    )
    assert not engine.check("cn-1", "join", at="2020-06-09").allowed
    assert not engine.check("us-1", "join", at="2020-06-09").allowed


def test_suspending_an_already_suspended_account_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US")
    do(
        engine,
        "suspend_account",
        "2020-06-01",
        account_id="a1",
        jurisdiction="platform",
        reason="spam",
    )

    reason = rejected(
        engine,
        "suspend_account",
        "2020-06-05",
        account_id="a1",
        jurisdiction="US",
        reason="court order",
    )
    assert "already suspended" in reason


def test_reinstating_an_account_that_is_not_suspended_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US")

    reason = rejected(engine, "reinstate_account", "2020-06-01", account_id="a1", reason="why")
    assert "not suspended" in reason


# -- region commands ------------------------------------------------------------------------------


def test_authorizing_a_partner_already_authorized_is_rejected(engine: Engine) -> None:
    partner(engine, "CN", "Systec Umeet", "2020-08-03")

    reason = rejected(
        engine, "authorize_partner", "2020-08-04", region="CN", partner="Systec Umeet"
    )
    assert "Systec Umeet" in reason and "already" in reason


def test_applying_a_rule_already_in_force_is_rejected(engine: Engine) -> None:
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")

    reason = rejected(
        engine, "apply_region_rule", "2020-06-01", region="CN", rule="free_hosting_suspended"
    )
    assert "free_hosting_suspended" in reason and "already" in reason


def test_lifting_a_rule_not_in_force_is_rejected(engine: Engine) -> None:
    rule(engine, "CN", "online_subscriptions_closed", "2020-06-01")

    reason = rejected(
        engine,
        "lift_region_rule",
        "2020-05-01",
        "2020-06-02",
        region="CN",
        rule="online_subscriptions_closed",
    )
    assert "online_subscriptions_closed" in reason and "not in force" in reason
    reason = rejected(
        engine, "lift_region_rule", "2020-06-03", region="US", rule="online_subscriptions_closed"
    )
    assert "not in force" in reason


# -- any command ------------------------------------------------------------------------------------


def test_a_command_effective_before_the_accounts_registration_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US", plan="pro", on="2020-03-01")

    reason = rejected(
        engine,
        "revoke_hosting",
        "2020-02-01",
        "2020-03-02",
        account_id="a1",
        reason="backdated too far",
    )
    assert "before" in reason and "registered" in reason


def test_a_command_for_an_unknown_account_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US")

    reason = rejected(
        engine,
        "suspend_account",
        "2020-03-01",
        account_id="ghost",
        jurisdiction="platform",
        reason="spam",
    )
    assert "unknown account" in reason


def test_a_recorded_at_earlier_than_the_newest_in_the_store_is_rejected(engine: Engine) -> None:
    register(engine, "a1", region="US", on="2020-03-01")

    reason = rejected(
        engine,
        "open_subscription",
        "2020-03-05",
        "2020-02-01",
        account_id="a1",
        plan="pro",
        channel="online",
    )
    assert "recorded_at" in reason and "earlier" in reason


def test_a_rejected_command_changes_nothing_while_the_others_of_its_batch_apply(
    engine: Engine,
) -> None:
    register(engine, "a1", region="US", plan="pro", on="2020-01-01")
    history_before = engine.history("a1")
    position = engine.position()

    results = engine.apply(
        [
            item("revoke_hosting", "2020-02-01", account_id="a1", reason="abuse"),
            item("reinstate_account", "2020-02-02", account_id="a1", reason="not suspended"),
            item("restore_hosting", "2020-02-03", account_id="a1", reason="cleared"),
        ]
    )

    assert [r.status for r in results] == ["applied", "rejected", "applied"]
    assert results[0].position is not None
    assert results[1].position == results[0].position + 1  # its entry in the rejection log
    recorded = engine.app.recorder.select_notifications(start=position + 1, limit=10)
    assert [n.topic.removeprefix("entitlements:") for n in recorded] == [
        "HostingRevoked",
        "CommandApplied",
        "CommandRejected",
        "HostingRestored",
        "CommandApplied",
    ]
    assert types(engine, "a1") == [e["type"] for e in history_before] + [
        "HostingRevoked",
        "HostingRestored",
    ]


def test_a_rejected_first_command_in_a_new_region_records_only_its_rejection(
    engine: Engine,
) -> None:
    reason = rejected(
        engine,
        "register_account",
        "2020-01-01",
        **registration("a1", region="FR", plan="free", channel="direct"),
    )
    assert "free" in reason
    assert engine.position() == 1  # the rejection log's entry; no region was opened
    with pytest.raises(UnknownAccount):
        engine.history("a1")
