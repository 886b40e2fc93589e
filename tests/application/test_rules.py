"""The rules of shared/spec/DOMAIN.md ("Rules, evaluated at effective time T with what was
recorded by K"), one behaviour per test, driven through the engine's public API.

Every command gives an explicit `recorded_at`, non-decreasing within a test (dates in 2020),
because the store refuses a `recorded_at` earlier than the newest it holds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entitlements.application.engine import Engine

BOOLEANS = ("join", "host", "subscribe_online", "purchase_direct", "purchase_via_partner")
LIMITS = ("max_participants", "max_meeting_minutes")


# -- fixture and helpers -------------------------------------------------------------------


# `engine`: tests/application/conftest.py's, a fresh in-memory store (memory://).


def do(engine: Engine, command: str, on: str, recorded: str | None = None, **fields: Any) -> None:
    """Apply one command effective `on` (recorded then too, unless `recorded` says when)."""
    item = {"command": command, **fields, "effective_at": on, "recorded_at": recorded or on}
    (result,) = engine.apply([item])
    assert result.status == "applied", f"{command} was rejected: {result.reason}"


def register(
    engine: Engine,
    account_id: str,
    region: str = "CN",
    plan: str = "free",
    channel: str = "online",
    on: str = "2020-01-01",
    recorded: str | None = None,
    partner: str | None = None,
) -> None:
    fields: dict[str, Any] = {
        "account_id": account_id,
        "region": region,
        "plan": plan,
        "channel": channel,
    }
    if partner is not None:
        fields["partner"] = partner
    do(engine, "register_account", on, recorded, **fields)


def rule(engine: Engine, region: str, name: str, on: str, recorded: str | None = None) -> None:
    do(engine, "apply_region_rule", on, recorded, region=region, rule=name)


def lift(engine: Engine, region: str, name: str, on: str, recorded: str | None = None) -> None:
    do(engine, "lift_region_rule", on, recorded, region=region, rule=name)


def can(engine: Engine, account_id: str, capability: str, at: Any, known: Any = None) -> bool:
    return engine.check(account_id, capability, at=at, as_known_at=known).allowed


def hosting_events(engine: Engine, account_id: str) -> list[dict[str, Any]]:
    return [e for e in engine.history(account_id) if e["type"].startswith("Hosting")]


def types(engine: Engine, account_id: str) -> list[str]:
    return [e["type"] for e in engine.history(account_id)]


# -- rule 1: suspended ---------------------------------------------------------------------


def test_a_suspended_account_may_do_nothing_and_its_limits_are_zero(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="pro", on="2020-01-01")
    do(engine, "authorize_partner", "2020-01-02", region="US", partner="Acme")
    do(
        engine,
        "suspend_account",
        "2020-06-01",
        account_id="u1",
        jurisdiction="platform",
        reason="spam",
    )

    before = {d.capability: d for d in engine.capabilities("u1", at="2020-05-31")}
    assert all(before[b].allowed for b in BOOLEANS)
    during = engine.capabilities("u1", at="2020-06-02")
    assert [d.capability for d in during][7:] == ["route_via:US"]  # rule 10 too
    assert [d.allowed for d in during] == [False] * 8
    assert {d.capability: d.value for d in during if d.capability in LIMITS} == {
        "max_participants": 0,
        "max_meeting_minutes": 0,
    }
    assert all("suspended" in d.reason for d in during)
    assert {d.because[0]["type"] for d in during} == {"AccountSuspended"}


# -- rule 2: join --------------------------------------------------------------------------


def test_join_is_allowed_unless_suspended_even_without_hosting_or_approval(engine: Engine) -> None:
    register(engine, "free", on="2020-01-01")
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    register(engine, "pending", on="2020-05-25")  # RegistrationSuspended
    do(engine, "suspend_account", "2020-06-01", account_id="free", jurisdiction="CN", reason="gov")
    do(engine, "reinstate_account", "2020-07-01", account_id="free", reason="appeal")

    assert not can(engine, "free", "host", "2020-05-20")
    assert can(engine, "free", "join", "2020-05-20")
    assert not can(engine, "pending", "host", "2020-05-26")
    assert can(engine, "pending", "join", "2020-05-26")
    assert not can(engine, "free", "join", "2020-06-15")
    assert can(engine, "free", "join", "2020-07-02")


# -- rule 3: host --------------------------------------------------------------------------


def test_a_manual_hosting_revocation_blocks_hosting_until_restored(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="pro")
    do(engine, "revoke_hosting", "2020-03-01", account_id="u1", reason="abuse")
    do(engine, "restore_hosting", "2020-04-01", account_id="u1", reason="cleared")

    assert can(engine, "u1", "host", "2020-02-28")
    decision = engine.check("u1", "host", at="2020-03-15")
    assert not decision.allowed
    assert "abuse" in decision.reason
    assert decision.because[0]["type"] == "HostingRevoked"
    assert can(engine, "u1", "host", "2020-04-02")


def test_hosting_is_blocked_while_the_registration_is_suspended_until_approved(
    engine: Engine,
) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", plan="pro", channel="direct", on="2020-05-25")
    do(
        engine,
        "approve_registration",
        "2020-06-10",
        account_id="p1",
        plan="enterprise",
        channel="direct",
    )

    decision = engine.check("p1", "host", at="2020-06-01")
    assert not decision.allowed
    assert "registration" in decision.reason
    assert decision.because[0]["type"] == "RegistrationSuspended"
    assert can(engine, "p1", "host", "2020-06-11")


def test_free_accounts_may_not_host_while_free_hosting_is_suspended(engine: Engine) -> None:
    register(engine, "cn-free", on="2020-01-01")
    register(engine, "cn-pro", plan="pro", on="2020-01-02")
    register(engine, "hk-free", region="HK", on="2020-01-03")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    lift(engine, "CN", "free_hosting_suspended", "2020-09-01")

    assert can(engine, "cn-free", "host", "2020-05-18")
    decision = engine.check("cn-free", "host", at="2020-05-19")
    assert not decision.allowed
    assert "free_hosting_suspended" in decision.reason
    assert can(engine, "cn-free", "host", "2020-09-01")
    assert can(engine, "cn-pro", "host", "2020-06-01")
    assert can(engine, "hk-free", "host", "2020-06-01")


# -- rules 4-6: region-level purchase capabilities ------------------------------------------


def test_subscribe_online_is_false_while_online_subscriptions_are_closed(engine: Engine) -> None:
    register(engine, "c1", plan="pro")
    rule(engine, "CN", "online_subscriptions_closed", "2020-06-01")
    lift(engine, "CN", "online_subscriptions_closed", "2020-12-01")

    assert can(engine, "c1", "subscribe_online", "2020-05-31")
    decision = engine.check("c1", "subscribe_online", at="2020-06-01")
    assert not decision.allowed
    assert "online_subscriptions_closed" in decision.reason
    assert decision.because[0]["type"] == "RegionRuleApplied"
    assert decision.because[0]["stream"] == "region:CN"
    assert can(engine, "c1", "subscribe_online", "2020-12-01")
    assert can(engine, "c1", "purchase_direct", "2020-06-01")


def test_purchase_direct_is_false_while_direct_sales_are_closed(engine: Engine) -> None:
    register(engine, "c1", plan="enterprise", channel="direct")
    rule(engine, "CN", "direct_sales_closed", "2020-08-23", recorded="2020-08-03")

    assert can(engine, "c1", "purchase_direct", "2020-08-22")
    decision = engine.check("c1", "purchase_direct", at="2020-08-23")
    assert not decision.allowed
    assert "direct_sales_closed" in decision.reason
    assert decision.because[0]["type"] == "RegionRuleApplied"
    assert can(engine, "c1", "subscribe_online", "2020-08-23")


def test_purchase_via_partner_is_true_while_the_region_has_an_authorized_partner(
    engine: Engine,
) -> None:
    register(engine, "c1", plan="pro")
    do(engine, "authorize_partner", "2020-08-03", region="CN", partner="Systec Umeet")

    before = engine.check("c1", "purchase_via_partner", at="2020-08-02")
    assert not before.allowed
    assert "partner" in before.reason
    after = engine.check("c1", "purchase_via_partner", at="2020-08-03")
    assert after.allowed
    assert "Systec Umeet" in after.reason
    assert after.because[0]["type"] == "PartnerAuthorized"


def test_purchases_are_false_while_the_registration_awaits_sales_approval(engine: Engine) -> None:
    do(engine, "authorize_partner", "2020-01-01", region="CN", partner="Bizconf")
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")
    lift(engine, "CN", "registration_suspended", "2020-07-01")
    do(
        engine,
        "approve_registration",
        "2020-08-01",
        account_id="p1",
        plan="enterprise",
        channel="partner",
        partner="Bizconf",
    )

    for capability in ("subscribe_online", "purchase_direct", "purchase_via_partner"):
        pending = engine.check("p1", capability, at="2020-07-15")
        assert not pending.allowed, capability
        assert "registration" in pending.reason
        assert can(engine, "p1", capability, "2020-08-02"), capability


# -- rule 7: before registration -----------------------------------------------------------


def test_a_check_before_the_registration_takes_effect_says_so_and_allows_nothing(
    engine: Engine,
) -> None:
    register(engine, "u1", region="US", plan="business", on="2020-03-01")

    decisions = engine.capabilities("u1", at="2020-02-01")
    assert [d.capability for d in decisions][7:] == ["route_via:US"]  # rule 10 too
    assert [d.allowed for d in decisions] == [False] * 8
    assert [d.value for d in decisions if d.capability in LIMITS] == [0, 0]
    assert all(d.value is None for d in decisions if d.capability in BOOLEANS)
    assert all("registration" in d.reason for d in decisions)
    assert engine.check("u1", "join", at="2020-03-01").allowed


def test_a_check_before_the_registration_was_known_says_so_and_allows_nothing(
    engine: Engine,
) -> None:
    register(engine, "u1", region="US", plan="pro", on="2020-01-01", recorded="2020-03-01")

    decision = engine.check("u1", "host", at="2020-02-01", as_known_at="2020-02-15")
    assert not decision.allowed
    assert "registration" in decision.reason
    limit = engine.check("u1", "max_participants", at="2020-02-01", as_known_at="2020-02-15")
    assert (limit.allowed, limit.value) == (False, 0)
    assert can(engine, "u1", "host", "2020-02-01", known="2020-03-01")


# -- rule 8: limits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "channel", "participants", "minutes"),
    [
        ("free", "online", 100, 40),
        ("pro", "online", 100, 1440),
        ("business", "online", 300, 1440),
        ("enterprise", "direct", 500, 1440),
    ],
)
def test_limits_are_the_plans_and_booleans_have_no_value(
    engine: Engine, plan: str, channel: str, participants: int, minutes: int
) -> None:
    register(engine, "u1", region="US", plan=plan, channel=channel)

    decisions = {d.capability: d for d in engine.capabilities("u1", at="2020-02-01")}
    assert (decisions["max_participants"].allowed, decisions["max_participants"].value) == (
        True,
        participants,
    )
    assert (decisions["max_meeting_minutes"].allowed, decisions["max_meeting_minutes"].value) == (
        True,
        minutes,
    )
    assert all(decisions[b].value is None for b in BOOLEANS)


def test_limits_are_zero_where_hosting_is_not_allowed(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="business")
    do(engine, "revoke_hosting", "2020-03-01", account_id="u1", reason="abuse")

    for capability in LIMITS:
        decision = engine.check("u1", capability, at="2020-03-02")
        assert (decision.allowed, decision.value) == (False, 0)
        assert "hosting" in decision.reason


# -- rule 9: "now" moves on ------------------------------------------------------------------


def test_the_now_answer_changes_when_a_future_effective_rule_takes_effect(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="pro", on="2020-01-01")
    now = datetime.now(UTC)
    effective = now + timedelta(minutes=5)
    rule(engine, "US", "direct_sales_closed", effective.isoformat(), recorded=now.isoformat())

    assert engine.check("u1", "purchase_direct").allowed  # no `at`: now, before the time
    assert can(engine, "u1", "purchase_direct", effective - timedelta(seconds=1))
    assert not can(engine, "u1", "purchase_direct", effective)
    assert not can(engine, "u1", "purchase_direct", effective + timedelta(seconds=1))


def test_the_now_answer_is_not_stale_once_the_effective_time_has_passed(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="pro", on="2020-01-01")
    now = datetime.now(UTC)
    effective = now + timedelta(seconds=1.5)
    rule(engine, "US", "direct_sales_closed", effective.isoformat(), recorded=now.isoformat())
    position = engine.position()

    assert engine.check("u1", "purchase_direct").allowed
    time.sleep(max(0.0, (effective - datetime.now(UTC)).total_seconds()) + 0.1)
    decision = engine.check("u1", "purchase_direct")
    assert not decision.allowed
    assert engine.position() == position  # no new event was recorded


# -- hosting fan-out: HostingRevoked / HostingRestored ----------------------------------------


def test_switching_on_free_hosting_suspended_revokes_hosting_on_every_free_account_of_the_region(
    engine: Engine,
) -> None:
    register(engine, "cn-free-1", on="2020-01-01")
    register(engine, "cn-free-2", on="2020-01-02")
    register(engine, "cn-pro", plan="pro", on="2020-01-03")
    register(engine, "hk-free", region="HK", on="2020-01-04")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")

    for account in ("cn-free-1", "cn-free-2"):
        (revoked,) = hosting_events(engine, account)
        assert revoked["type"] == "HostingRevoked"
        assert revoked["effective_at"].startswith("2020-05-19")
        assert revoked["cause"]["rule"] == "free_hosting_suspended"
        assert revoked["cause"]["rule_event"]["type"] == "RegionRuleApplied"
        assert not can(engine, account, "host", "2020-05-20")
    assert hosting_events(engine, "cn-pro") == []
    assert hosting_events(engine, "hk-free") == []


def test_an_account_registered_free_while_the_rule_is_on_is_revoked_in_the_same_step(
    engine: Engine,
) -> None:
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    register(engine, "late", on="2020-06-01")

    assert types(engine, "late") == ["AccountRegistered", "HostingRevoked"]
    registered, revoked = engine.history("late")
    assert revoked["effective_at"] == registered["effective_at"]
    assert revoked["recorded_at"] == registered["recorded_at"]
    assert revoked["cause"]["rule"] == "free_hosting_suspended"
    assert not can(engine, "late", "host", "2020-06-01")


def test_an_account_that_becomes_free_while_the_rule_is_on_is_revoked_in_the_same_step(
    engine: Engine,
) -> None:
    register(engine, "c1", plan="pro")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    assert hosting_events(engine, "c1") == []
    do(engine, "close_subscription", "2020-07-01", account_id="c1", reason="not renewed")

    assert types(engine, "c1")[-2:] == ["SubscriptionClosed", "HostingRevoked"]
    assert engine.history("c1")[-1]["cause"]["rule"] == "free_hosting_suspended"
    assert can(engine, "c1", "host", "2020-06-30")
    assert not can(engine, "c1", "host", "2020-07-01")


def test_leaving_the_free_plan_records_hosting_restored(engine: Engine) -> None:
    register(engine, "c1")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    do(engine, "open_subscription", "2020-06-05", account_id="c1", plan="pro", channel="online")

    assert types(engine, "c1")[-2:] == ["SubscriptionOpened", "HostingRestored"]
    restored = engine.history("c1")[-1]
    assert restored["effective_at"].startswith("2020-06-05")
    assert restored["cause"]["rule"] == "free_hosting_suspended"
    assert not can(engine, "c1", "host", "2020-06-04")
    assert can(engine, "c1", "host", "2020-06-05")


def test_approval_to_enterprise_of_a_pending_free_account_records_hosting_restored(
    engine: Engine,
) -> None:
    rule(engine, "CN", "registration_suspended", "2020-05-19")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    register(engine, "p1", on="2020-05-25")
    do(
        engine,
        "approve_registration",
        "2020-06-01",
        account_id="p1",
        plan="enterprise",
        channel="direct",
    )

    assert types(engine, "p1") == [
        "AccountRegistered",
        "RegistrationSuspended",
        "HostingRevoked",
        "RegistrationApproved",
        "HostingRestored",
    ]
    assert can(engine, "p1", "host", "2020-06-01")


def test_lifting_the_rule_records_hosting_restored(engine: Engine) -> None:
    register(engine, "c1")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    lift(engine, "CN", "free_hosting_suspended", "2020-09-01")

    revoked, restored = hosting_events(engine, "c1")
    assert revoked["type"] == "HostingRevoked"
    assert restored["type"] == "HostingRestored"
    assert restored["effective_at"].startswith("2020-09-01")
    assert restored["cause"]["rule_event"]["type"] == "RegionRuleLifted"
    assert not can(engine, "c1", "host", "2020-08-31")
    assert can(engine, "c1", "host", "2020-09-01")


def test_a_rule_recorded_ahead_of_its_effective_time_revokes_hosting_only_from_that_time(
    engine: Engine,
) -> None:
    register(engine, "c1", on="2020-01-01")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19", recorded="2020-05-01")
    register(engine, "c2", on="2020-05-10")  # after the rule was recorded, before it applies

    for account in ("c1", "c2"):
        (revoked,) = hosting_events(engine, account)
        assert revoked["effective_at"].startswith("2020-05-19")
        assert can(engine, account, "host", "2020-05-18")
        assert not can(engine, account, "host", "2020-05-19")
    assert can(engine, "c1", "host", "2020-05-20", known="2020-04-30")


def test_a_backdated_subscription_before_the_rule_cancels_its_revocation_with_a_correcting_event(
    engine: Engine,
) -> None:
    register(engine, "c1", on="2020-01-10")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    do(
        engine,
        "open_subscription",
        "2020-05-01",
        recorded="2020-06-01",
        account_id="c1",
        plan="pro",
        channel="online",
    )

    revoked, restored = hosting_events(engine, "c1")
    assert (revoked["type"], revoked["effective_at"][:10], revoked["recorded_at"][:10]) == (
        "HostingRevoked",
        "2020-05-19",
        "2020-05-19",
    )
    assert (restored["type"], restored["effective_at"][:10], restored["recorded_at"][:10]) == (
        "HostingRestored",
        "2020-05-19",
        "2020-06-01",
    )
    assert restored["cause"]["rule"] == "free_hosting_suspended"
    # as known now, the account was never revoked; as known before the correction, it was
    assert can(engine, "c1", "host", "2020-05-20")
    assert can(engine, "c1", "host", "2020-07-01")
    assert not can(engine, "c1", "host", "2020-05-20", known="2020-05-31")


def test_hosting_events_agree_with_rule_3_when_switches_and_plans_are_recorded_out_of_order(
    engine: Engine,
) -> None:
    register(engine, "c1", on="2020-01-01")
    rule(engine, "CN", "free_hosting_suspended", "2020-07-01", recorded="2020-04-01")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19", recorded="2020-04-02")
    lift(engine, "CN", "free_hosting_suspended", "2020-06-01", recorded="2020-04-03")
    do(
        engine,
        "open_subscription",
        "2020-05-25",
        recorded="2020-04-04",
        account_id="c1",
        plan="pro",
        channel="online",
    )
    do(engine, "close_subscription", "2020-05-28", recorded="2020-04-05", account_id="c1")
    do(
        engine,
        "open_subscription",
        "2020-06-15",
        recorded="2020-04-06",
        account_id="c1",
        plan="pro",
        channel="online",
    )
    do(engine, "close_subscription", "2020-07-10", recorded="2020-04-07", account_id="c1")

    # rule on [05-19, 06-01) and from 07-01; free until 05-25, [05-28, 06-15), from 07-10
    expected = {
        "2020-05-18": True,
        "2020-05-19": False,
        "2020-05-25": True,
        "2020-05-28": False,
        "2020-06-01": True,
        "2020-06-15": True,
        "2020-07-01": True,
        "2020-07-10": False,
    }
    assert {t: can(engine, "c1", "host", t) for t in expected} == expected
    # what was believed before the lift and the later plan changes were recorded
    assert not can(engine, "c1", "host", "2020-06-10", known="2020-04-02")
    assert can(engine, "c1", "host", "2020-06-10", known="2020-04-01")


def test_a_manual_revocation_and_a_rule_caused_one_are_separate_pieces_of_state(
    engine: Engine,
) -> None:
    register(engine, "c1")
    rule(engine, "CN", "free_hosting_suspended", "2020-05-19")
    do(engine, "revoke_hosting", "2020-06-01", account_id="c1", reason="abuse")
    do(engine, "restore_hosting", "2020-06-10", account_id="c1", reason="cleared")

    # restoring the manual revocation leaves the rule-caused one in force
    decision = engine.check("c1", "host", at="2020-06-11")
    assert not decision.allowed
    assert "free_hosting_suspended" in decision.reason
    assert "abuse" in engine.check("c1", "host", at="2020-06-05").reason

    do(engine, "revoke_hosting", "2020-07-01", account_id="c1", reason="again")
    do(engine, "open_subscription", "2020-07-10", account_id="c1", plan="pro", channel="online")

    # leaving the free plan ends the rule-caused revocation, not the manual one
    decision = engine.check("c1", "host", at="2020-07-11")
    assert not decision.allowed
    assert "again" in decision.reason
    assert "free_hosting_suspended" not in decision.reason
    do(engine, "restore_hosting", "2020-07-20", account_id="c1", reason="cleared")
    assert can(engine, "c1", "host", "2020-07-21")


def test_hosting_can_be_revoked_and_restored_and_a_plan_closed_while_suspended(
    engine: Engine,
) -> None:
    register(engine, "u1", region="US", plan="pro")
    do(engine, "suspend_account", "2020-03-01", account_id="u1", jurisdiction="US", reason="court")
    do(engine, "revoke_hosting", "2020-03-05", account_id="u1", reason="abuse")
    do(engine, "close_subscription", "2020-03-10", account_id="u1")
    do(engine, "reinstate_account", "2020-04-01", account_id="u1", reason="appeal")

    decision = engine.check("u1", "host", at="2020-04-02")
    assert not decision.allowed
    assert "abuse" in decision.reason
    do(engine, "restore_hosting", "2020-04-05", account_id="u1", reason="ok")
    assert engine.check("u1", "max_meeting_minutes", at="2020-04-06").value == 40  # free now


# -- ordering and knowledge -----------------------------------------------------------------


def test_events_with_equal_effective_times_apply_in_recorded_order(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="free")
    do(
        engine,
        "open_subscription",
        "2020-06-01",
        recorded="2020-06-01",
        account_id="u1",
        plan="pro",
        channel="online",
    )
    do(
        engine,
        "open_subscription",
        "2020-06-01",
        recorded="2020-06-02",
        account_id="u1",
        plan="business",
        channel="online",
    )
    do(
        engine,
        "suspend_account",
        "2020-07-01",
        recorded="2020-07-01",
        account_id="u1",
        jurisdiction="platform",
        reason="spam",
    )
    do(
        engine,
        "reinstate_account",
        "2020-07-01",
        recorded="2020-07-02",
        account_id="u1",
        reason="mistake",
    )

    assert engine.check("u1", "max_participants", at="2020-06-01").value == 300
    assert (
        engine.check("u1", "max_participants", at="2020-06-01", as_known_at="2020-06-01").value
        == 100
    )
    assert can(engine, "u1", "join", "2020-07-01")
    assert not can(engine, "u1", "join", "2020-07-01", known="2020-07-01")


def test_a_rule_is_on_when_the_last_switch_in_force_turned_it_on(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="pro")
    rule(engine, "US", "online_subscriptions_closed", "2020-05-01", recorded="2020-02-01")
    lift(engine, "US", "online_subscriptions_closed", "2020-06-01", recorded="2020-02-02")
    rule(engine, "US", "online_subscriptions_closed", "2020-06-01", recorded="2020-02-03")

    assert can(engine, "u1", "subscribe_online", "2020-04-30")
    assert not can(engine, "u1", "subscribe_online", "2020-05-15")
    assert not can(engine, "u1", "subscribe_online", "2020-06-01")  # re-applied after the lift
    assert can(engine, "u1", "subscribe_online", "2020-06-01", known="2020-02-02")


def test_as_known_at_ignores_events_recorded_later(engine: Engine) -> None:
    register(engine, "u1", region="US", plan="pro", on="2020-01-01")
    do(
        engine,
        "revoke_hosting",
        "2020-02-01",
        recorded="2020-03-01",
        account_id="u1",
        reason="audit finding",
    )

    assert can(engine, "u1", "host", "2020-02-15", known="2020-02-28")
    assert not can(engine, "u1", "host", "2020-02-15", known="2020-03-01")
    assert not can(engine, "u1", "host", "2020-02-15")
    decision = engine.check("u1", "host", at="2020-02-15", as_known_at="2020-02-28")
    assert all(e["recorded_at"] <= "2020-02-28" for e in decision.because)
