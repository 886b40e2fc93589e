"""Exactly once, with who asked: command ids, actors, jurisdiction and the rejection log
(DOMAIN.md, "Commands, and what makes them fail"), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from entitlements import open_engine
from entitlements.application.engine import Engine


def cmd(command: str, on: str, **fields: Any) -> dict[str, Any]:
    return {"command": command, **fields, "effective_at": on}


US_PRO = cmd(
    "register_account",
    "2020-01-01",
    account_id="us-1",
    region="US",
    plan="pro",
    channel="online",
    command_id="reg-us-1",
    actor="crm",
)


def test_a_command_id_already_on_file_returns_the_original_result_and_records_nothing(
    engine: Engine,
) -> None:
    (first,) = engine.apply([US_PRO])
    position = engine.position()
    (again,) = engine.apply([US_PRO])
    assert (first.status, first.duplicate, first.command_id) == ("applied", False, "reg-us-1")
    assert (again.status, again.reason, again.position, again.duplicate) == (
        "applied",
        None,
        first.position,
        True,
    )
    assert engine.position() == position
    assert again.as_dict()["duplicate"] is True and "duplicate" not in first.as_dict()


def test_a_rejected_command_sent_again_is_the_same_rejection_recorded_once(engine: Engine) -> None:
    engine.apply([US_PRO])
    close = cmd("close_subscription", "2020-01-02", account_id="us-1", command_id="close-1")
    (closed,) = engine.apply([close])
    (rejected,) = engine.apply([{**close, "command_id": "close-2"}])
    position = engine.position()
    (again,) = engine.apply([{**close, "command_id": "close-2"}])
    assert closed.status == "applied" and rejected.status == "rejected"
    assert (again.status, again.reason, again.position, again.duplicate) == (
        "rejected",
        rejected.reason,
        rejected.position,
        True,
    )
    assert engine.position() == position
    assert [r["command_id"] for r in engine.rejections()] == ["close-2"]


def test_the_same_command_id_for_a_different_command_is_rejected_and_the_first_stands(
    engine: Engine,
) -> None:
    (first,) = engine.apply([US_PRO])
    (other,) = engine.apply([{**US_PRO, "account_id": "us-2"}])
    assert other.status == "rejected"
    assert other.reason == "command_id reg-us-1 was used for a different command"
    assert engine.history("us-1")[0]["command_id"] == "reg-us-1"
    (again,) = engine.apply([US_PRO])  # the id still belongs to the first command
    assert (again.status, again.position, again.duplicate) == ("applied", first.position, True)
    (entry,) = engine.rejections()
    assert (entry["command_id"], entry["request"]["account_id"]) == ("reg-us-1", "us-2")


def test_a_retry_that_lets_recorded_at_default_is_the_same_command(engine: Engine) -> None:
    revoke = cmd(
        "revoke_hosting", "2020-02-01", account_id="us-1", reason="abuse", command_id="rv-1"
    )
    engine.apply([US_PRO, revoke])
    (again,) = engine.apply([revoke])
    assert again.duplicate and again.status == "applied"
    assert [e["type"] for e in engine.history("us-1")].count("HostingRevoked") == 1


def test_a_command_id_is_on_file_for_every_process_and_after_a_restart(store_url: str) -> None:
    with open_engine(store_url) as one, open_engine(store_url) as two:
        (first,) = one.apply([US_PRO])
        (second,) = two.apply([US_PRO])  # another process, whose index had not seen it
        assert second.duplicate and second.position == first.position
    with open_engine(store_url) as restarted:
        (third,) = restarted.apply([US_PRO])
        assert third.duplicate and third.position == first.position
        assert len(restarted.history("us-1")) == 1


def test_commands_without_an_id_are_separate_commands_each_with_an_id_of_its_own(
    engine: Engine,
) -> None:
    engine.apply([US_PRO])
    revoke = cmd("revoke_hosting", "2020-02-01", account_id="us-1", reason="abuse")
    restore = cmd("restore_hosting", "2020-02-01", account_id="us-1", reason="ok")
    results = engine.apply([revoke, restore, revoke])
    assert [r.status for r in results] == ["applied", "applied", "applied"]
    assert len({r.command_id for r in results}) == 3


def test_the_actor_is_kept_with_every_event_the_command_records_and_shown_in_history(
    engine: Engine,
) -> None:
    engine.apply(
        [
            cmd(
                "apply_region_rule",
                "2020-01-01",
                region="CN",
                rule="free_hosting_suspended",
                actor="regulator-liaison",
                command_id="rule-1",
            ),
            cmd(
                "register_account",
                "2020-02-01",
                account_id="cn-1",
                region="CN",
                plan="free",
                channel="online",
                actor="signup-service",
                command_id="reg-1",
            ),
            cmd(
                "open_subscription",
                "2020-03-01",
                account_id="cn-1",
                plan="pro",
                channel="online",
                actor="ops@example",
            ),
        ]
    )
    history = engine.history("cn-1")
    assert [(e["type"], e.get("actor")) for e in history] == [
        ("AccountRegistered", "signup-service"),
        ("HostingRevoked", "signup-service"),  # rule-caused, in the same step as the sign-up
        ("SubscriptionOpened", "ops@example"),
        ("HostingRestored", "ops@example"),
    ]
    assert history[1]["cause"]["rule"] == "free_hosting_suspended"
    assert history[0]["command_id"] == history[1]["command_id"] == "reg-1"


def test_a_region_request_never_reaches_an_account_outside_its_region_whatever_the_command(
    engine: Engine,
) -> None:
    engine.apply(
        [
            US_PRO,
            cmd(
                "register_account",
                "2020-01-01",
                account_id="cn-1",
                region="CN",
                plan="pro",
                channel="online",
            ),
        ]
    )
    position = engine.position()
    outside = [
        cmd("revoke_hosting", "2020-06-01", account_id="us-1", reason="request", jurisdiction="CN"),
        cmd("close_subscription", "2020-06-01", account_id="us-1", jurisdiction="CN"),
        cmd(
            "suspend_account", "2020-06-01", account_id="us-1", reason="request", jurisdiction="CN"
        ),
        cmd(
            "register_account",
            "2020-06-01",
            account_id="us-2",
            region="US",
            plan="pro",
            channel="online",
            jurisdiction="CN",
        ),
    ]
    results = engine.apply(outside)
    assert [r.status for r in results] == ["rejected"] * 4
    assert all("jurisdiction CN does not reach" in (r.reason or "") for r in results)
    assert len(engine.history("us-1")) == 1
    assert engine.position() == position + 4  # four entries in the rejection log, nothing else
    inside = engine.apply(
        [
            cmd(
                "revoke_hosting",
                "2020-06-01",
                account_id="cn-1",
                reason="request",
                jurisdiction="CN",
            ),
            cmd(
                "revoke_hosting",
                "2020-06-01",
                account_id="us-1",
                reason="abuse",
                jurisdiction="platform",
            ),
        ]
    )
    assert [r.status for r in inside] == ["applied", "applied"]


def test_the_rejection_log_keeps_the_command_as_given_who_asked_why_and_both_clocks(
    store_url: str,
) -> None:
    with open_engine(store_url) as engine:
        engine.apply(
            [
                {**US_PRO, "recorded_at": "2020-01-01"},
                {
                    **cmd(
                        "register_account",
                        "2020-01-01",
                        account_id="cn-1",
                        region="CN",
                        plan="pro",
                        channel="online",
                    ),
                    "recorded_at": "2020-01-01",
                },
            ]
        )
        engine.apply(
            [
                {
                    **cmd(
                        "suspend_account",
                        "2020-06-01",
                        account_id="us-1",
                        reason="request",
                        jurisdiction="CN",
                        actor="gov-liaison",
                    ),
                    "recorded_at": "2020-06-02",
                },
                cmd("reinstate_account", "2020-06-03", account_id="cn-1", reason="x", actor="ops"),
                cmd("apply_region_rule", "2020-06-04", region="CN", rule="direct_sales_closed"),
                cmd(
                    "lift_region_rule",
                    "2020-06-05",
                    region="CN",
                    rule="online_subscriptions_closed",
                ),
            ]
        )
    with open_engine(store_url) as restarted:  # survives restarts
        every = restarted.rejections()
        assert [(r["command"], r["account_id"], r["region"], r["actor"]) for r in every] == [
            ("suspend_account", "us-1", "US", "gov-liaison"),
            ("reinstate_account", "cn-1", "CN", "ops"),
            ("lift_region_rule", None, "CN", None),
        ]
        first = every[0]
        assert first["request"]["jurisdiction"] == "CN" and first["request"]["reason"] == "request"
        assert (first["effective_at"], first["recorded_at"]) == (
            "2020-06-01T00:00:00Z",
            "2020-06-02T00:00:00Z",
        )
        assert "jurisdiction" in first["reason"] and first["position"] > 0
        assert [r["command"] for r in restarted.rejections(account_id="cn-1")] == [
            "reinstate_account"
        ]
        assert [r["command"] for r in restarted.rejections(region="CN")] == [
            "reinstate_account",
            "lift_region_rule",
        ]


def test_a_rejection_for_a_recorded_at_in_the_past_is_recorded_without_turning_the_clock_back(
    engine: Engine,
) -> None:
    engine.apply([{**US_PRO, "recorded_at": "2020-03-01"}])
    (late,) = engine.apply(
        [
            {
                **cmd("revoke_hosting", "2020-02-01", account_id="us-1", reason="x"),
                "recorded_at": "2020-02-01",
            }
        ]
    )
    assert late.status == "rejected" and "earlier than the newest" in (late.reason or "")
    (entry,) = engine.rejections()
    assert entry["recorded_at"] == "2020-03-01T00:00:00Z"  # the store's newest, not earlier
    assert entry["request"]["recorded_at"] == "2020-02-01T00:00:00Z"  # what was asked for
    (later,) = engine.apply(
        [
            {
                **cmd("revoke_hosting", "2020-03-02", account_id="us-1", reason="y"),
                "recorded_at": "2020-03-02",
            }
        ]
    )
    assert later.status == "applied"


def test_an_index_that_takes_a_command_record_alone_reaches_its_position(store_url: str) -> None:
    """A follower gets events one by one (LISTEN/NOTIFY): the command's record, which
    changes no answer, still moves the index to the position `apply` reported."""
    with open_engine(store_url) as writer, open_engine(store_url) as follower:
        (result,) = writer.apply([US_PRO])
        notifications = writer.app.recorder.select_notifications(start=1, limit=100)
        for n in notifications:  # as a subscription delivers them: one at a time
            follower.projector._take([(n.id, follower.app.mapper.to_domain_event(n))])
        assert notifications[-1].topic == "entitlements:CommandApplied"
        assert follower.index.position == result.position
        follower.wait_for(result.position, timeout=0.01)
