"""`choose_data_regions`, `data_centre_isolated` and `route_via:R` through the engine, on the
in-memory store: each rejection changes nothing but the rejection log; a malformed choice is
refused whole naming its field; the isolation is answered from the region's own events (no
fan-out: not one account event recorded); history shows the choice with both clocks and who
asked; checks agree with the rules at T as known at K; a future-effective isolation changes
"now" when its time arrives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entitlements import MalformedCommand
from entitlements.application.engine import Engine
from entitlements.domain.times import iso
from tests.application.test_rejections import do, register, rejected


def choose(on: str, account_id: str, *regions: str, **more: Any) -> dict[str, Any]:
    return {
        "command": "choose_data_regions",
        "account_id": account_id,
        "regions": list(regions),
        "effective_at": on,
        "recorded_at": more.pop("recorded", on),
        **more,
    }


def isolate(engine: Engine, region: str, on: str, recorded: str | None = None) -> None:
    do(engine, "apply_region_rule", on, recorded, region=region, rule="data_centre_isolated")


# -- rejections ------------------------------------------------------------------------------


def test_a_free_account_may_not_choose(engine: Engine) -> None:
    register(engine, "us-1", region="US")
    reason = rejected(
        engine, "choose_data_regions", "2020-04-20", account_id="us-1", regions=["US"]
    )
    assert reason.startswith("account us-1 is on the free plan at 2020-04-20")


def test_a_suspended_account_may_not_choose(engine: Engine) -> None:
    register(engine, "us-1", region="US", plan="pro")
    do(engine, "suspend_account", "2020-06-01", account_id="us-1", jurisdiction="US", reason="x")
    reason = rejected(
        engine, "choose_data_regions", "2020-06-02", account_id="us-1", regions=["US"]
    )
    assert reason == "account us-1 is suspended at 2020-06-02T00:00:00Z"


def test_an_isolated_region_may_not_be_chosen_by_an_account_outside_it(engine: Engine) -> None:
    register(engine, "de-1", region="DE", plan="pro")
    isolate(engine, "CN", "2020-04-18", "2020-04-14")
    reason = rejected(
        engine, "choose_data_regions", "2020-05-01", account_id="de-1", regions=["DE", "CN"]
    )
    assert reason.startswith("CN is data_centre_isolated at 2020-05-01T00:00:00Z")


def test_an_unknown_account_and_a_foreign_jurisdiction_are_rejected(engine: Engine) -> None:
    register(engine, "us-1", region="US", plan="pro")
    (unknown,) = engine.apply([choose("2020-05-01", "nobody", "US")])
    assert unknown.status == "rejected" and "nobody" in (unknown.reason or "")
    reason = rejected(
        engine,
        "choose_data_regions",
        "2020-05-01",
        account_id="us-1",
        regions=["US"],
        jurisdiction="CN",
    )
    assert "never reaches outside its own jurisdiction" in reason


def test_isolating_twice_or_lifting_what_is_not_on_is_rejected(engine: Engine) -> None:
    isolate(engine, "CN", "2020-04-18")
    rule = {"region": "CN", "rule": "data_centre_isolated"}
    assert "already in force" in rejected(engine, "apply_region_rule", "2020-05-01", **rule)
    do(engine, "lift_region_rule", "2020-06-01", **rule)
    assert "not in force" in rejected(engine, "lift_region_rule", "2020-07-01", **rule)


# -- malformed: refused whole ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        ([], "at least 1"),
        ([f"A{chr(65 + i)}" for i in range(21)], "at most 20"),
        (["US", "us"], "pattern"),
        (["US", "DE", "US"], "a region is listed twice: US"),
        ("US", "list"),
        (["USA"], "pattern"),
    ],
)
def test_a_malformed_choice_is_refused_whole_naming_the_field(
    engine: Engine, regions: Any, message: str
) -> None:
    register(engine, "us-1", region="US", plan="pro")
    position = engine.position()
    good = choose("2020-05-01", "us-1", "US")
    bad = {**good, "regions": regions}
    with pytest.raises(MalformedCommand) as e:
        engine.apply([good, bad])
    assert e.value.item == 2 and (e.value.field or "").startswith("regions")
    assert message in str(e.value)
    assert engine.position() == position


def test_twenty_distinct_regions_are_fine(engine: Engine) -> None:
    register(engine, "us-1", region="US", plan="pro")
    twenty = [f"A{chr(65 + i)}" for i in range(20)]
    (result,) = engine.apply([choose("2020-05-01", "us-1", *twenty)])
    assert result.status == "applied"


# -- no fan-out; history ---------------------------------------------------------------------


def test_isolation_records_one_region_event_and_no_account_event(engine: Engine) -> None:
    for i in range(3):
        register(engine, f"us-{i}", region="US")
    before = [engine.history(f"us-{i}") for i in range(3)]
    position = engine.position()
    isolate(engine, "CN", "2020-04-18")
    recorded = engine.app.recorder.select_notifications(start=position + 1, limit=100)
    assert [n.topic.removeprefix("entitlements:") for n in recorded] == [
        "RegionOpened",
        "RegionRuleApplied",
        "CommandApplied",
    ]
    assert [engine.history(f"us-{i}") for i in range(3)] == before
    assert not engine.check("us-1", "route_via:CN", at="2020-04-18").allowed


def test_history_shows_the_choice_with_both_clocks_and_who_asked(engine: Engine) -> None:
    register(engine, "us-1", region="US", plan="enterprise", channel="direct")
    engine.apply(
        [choose("2020-04-18", "us-1", "US", "DE", recorded="2020-04-15", actor="ops@example")]
    )
    last = engine.history("us-1")[-1]
    assert (last["type"], last["regions"], last["actor"]) == (
        "DataRegionsChosen",
        ["US", "DE"],
        "ops@example",
    )
    assert (last["effective_at"], last["recorded_at"]) == (
        "2020-04-18T00:00:00Z",
        "2020-04-15T00:00:00Z",
    )


# -- checks ----------------------------------------------------------------------------------


def test_checks_follow_rule_10_at_t_as_known_at_k(engine: Engine) -> None:
    register(engine, "us-1", region="US", plan="pro")
    isolate(engine, "CN", "2020-04-18", "2020-04-14")
    engine.apply([choose("2020-04-18", "us-1", "US", "DE", recorded="2020-04-15")])
    d = engine.check("us-1", "route_via:CN", at="2020-04-20")
    assert (d.allowed, d.because[0]["type"], d.because[0]["stream"]) == (
        False,
        "RegionRuleApplied",
        "region:CN",
    )
    assert engine.check("us-1", "route_via:CN", at="2020-04-20", as_known_at="2020-04-13").allowed
    assert engine.check("us-1", "route_via:DE", at="2020-04-20").allowed
    assert not engine.check("us-1", "route_via:HK", at="2020-04-20").allowed
    assert engine.check("us-1", "route_via:HK", at="2020-04-17").allowed
    assert engine.check("us-1", "route_via:US").allowed


def test_a_bad_route_via_is_a_value_error_naming_it(engine: Engine) -> None:
    register(engine, "us-1", region="US")
    for bad in ("route_via:us", "route_via:USA", "route_via"):
        with pytest.raises(ValueError, match="unknown capability"):
            engine.check("us-1", bad)
        with pytest.raises(ValueError, match="unknown capability"):
            engine.check("us-1", bad, at="2020-05-01")


def test_capabilities_list_route_via_for_every_region_the_store_knows(engine: Engine) -> None:
    register(engine, "us-1", region="US")
    register(engine, "de-1", region="DE")
    isolate(engine, "CN", "2020-04-18")
    listed = [d.capability for d in engine.capabilities("us-1")]
    assert listed[7:] == ["route_via:CN", "route_via:DE", "route_via:US"]
    answers = {d.capability: d.allowed for d in engine.capabilities("us-1")}
    assert answers["route_via:CN"] is False and answers["route_via:DE"] is True
    register(engine, "jp-1", region="JP", on="2020-05-01")  # known since the last call: listed
    listed = [d.capability for d in engine.capabilities("us-1")]
    assert listed[7:] == ["route_via:CN", "route_via:DE", "route_via:JP", "route_via:US"]


def test_now_changes_when_a_future_isolation_takes_effect(engine: Engine) -> None:
    register(engine, "us-1", region="US")
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    isolate(engine, "CN", iso(soon), iso(datetime.now(UTC)))
    first = engine.check("us-1", "route_via:CN")
    assert first.allowed and engine.check("us-1", "route_via:CN").allowed  # kept, until then
    while datetime.now(UTC) <= soon:
        pass
    later = engine.check("us-1", "route_via:CN")
    assert not later.allowed, "a stale 'now' after the isolation took effect"


# -- the change feed ---------------------------------------------------------------------------


def test_the_feed_lists_route_via_changes_of_a_choice_and_of_an_isolation(engine: Engine) -> None:
    register(engine, "de-1", region="DE", plan="pro")
    do(engine, "authorize_partner", "2020-01-02", region="CN", partner="Umeet")  # CN known
    after = engine.position()
    engine.apply([choose("2020-03-01", "de-1", "DE", "US")])
    isolate(engine, "CN", "2020-04-18", "2020-04-14")
    items, _ = engine.changes(after, limit=100)
    routes = [
        (i.get("account_id"), i.get("region"), i.get("scope"), i["capability"], i["new"]["allowed"])
        for i in items
        if i["capability"].startswith("route_via:")
    ]
    assert routes == [
        ("de-1", None, None, "route_via:CN", False),  # not chosen
        (None, "CN", "outside", "route_via:CN", False),  # isolated: no fan-out, one item
    ]
    assert items[-1]["effective_at"] == "2020-04-18T00:00:00Z"
    assert items[-1]["recorded_at"] == "2020-04-14T00:00:00Z"


def test_a_choices_jurisdiction_is_proved_from_its_fingerprint(engine: Engine) -> None:
    """`audit jurisdiction` proves an applied choice's jurisdiction, kept on its record or,
    for a record from before that field, from the command's fingerprint and its event."""
    import copy

    from entitlements.application import audit

    register(engine, "de-1", region="DE", plan="pro")
    engine.apply([choose("2020-05-05", "de-1", "DE", "US", jurisdiction="DE")])
    walked = audit._walk_commands(engine)
    ((command_id, (_, record)),) = [
        (c, r) for c, r in walked.applied.items() if r[1].command == "choose_data_regions"
    ]
    own = next(c for c in walked.changes if c.command_id == command_id)
    older = copy.copy(record)
    del vars(older)["jurisdiction"]
    assert audit.prove_jurisdiction(older, own) == record.jurisdiction == "DE"
    assert audit.jurisdiction(engine, "DE")["holds"]
