"""The Region aggregate in memory: rule switches and partners, each validated at the
command's effective time, rejected with a reason or recorded with both clocks and who asked.
"""

from __future__ import annotations

from typing import Any

import pytest

from entitlements.domain.region import Region, RegionRules, region_id
from entitlements.domain.rules import Rejected, Who
from tests.unit.domain_facts import t

WHO: Who = {"actor": "policy", "command_id": "cmd-9"}


def opened(code: str = "CN") -> Region:
    r = Region(region=code, effective_at=t("2020-01-01"), recorded_at=t("2020-01-01"))
    r.collect_events()
    return r


def recorded(r: Region) -> list[tuple[str, dict[str, Any]]]:
    skip = {"originator_id", "originator_version", "timestamp", "originator_topic"}
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if k not in skip})
        for e in r.collect_events()
    ]


def test_a_region_opens_with_its_code_and_a_stable_id() -> None:
    r = Region(region="CN", effective_at=t("2020-01-01"), recorded_at=t("2020-01-01"), **WHO)
    assert r.id == region_id("CN") == Region.create_id("CN") != region_id("HK")
    ((name, event),) = recorded(r)
    assert (name, event["region"], event["actor"]) == ("RegionOpened", "CN", "policy")
    assert r.state_at().rules_on == {} and r.state_at().partners == {}


def test_apply_rule_records_the_switch_with_both_clocks_and_who() -> None:
    r = opened()
    r.apply_rule("direct_sales_closed", t("2020-08-23"), t("2020-08-03"), WHO)
    assert recorded(r) == [
        (
            "RegionRuleApplied",
            {
                "rule": "direct_sales_closed",
                "effective_at": t("2020-08-23"),
                "recorded_at": t("2020-08-03"),
                "actor": "policy",
                "command_id": "cmd-9",
            },
        )
    ]
    (_, fact) = r.facts
    assert (fact.stream, fact.version, fact.data["rule"]) == ("region:CN", 2, "direct_sales_closed")


def test_applying_a_rule_already_in_force_is_rejected() -> None:
    r = opened()
    r.apply_rule("free_hosting_suspended", t("2020-05-19"), t("2020-05-19"))
    with pytest.raises(
        Rejected, match="free_hosting_suspended is already in force in CN at 2020-06-01"
    ):
        r.apply_rule("free_hosting_suspended", t("2020-06-01"), t("2020-06-01"))


def test_a_rule_is_judged_at_the_commands_effective_time() -> None:
    r = opened()
    r.apply_rule("direct_sales_closed", t("2020-08-23"), t("2020-08-03"))
    r.apply_rule("direct_sales_closed", t("2020-08-01"), t("2020-08-04"))  # earlier: not on then
    assert [f.effective_at for f in r.facts[1:]] == [t("2020-08-01"), t("2020-08-23")]


def test_lift_rule_records_the_lift() -> None:
    r = opened()
    r.apply_rule("online_subscriptions_closed", t("2020-06-01"), t("2020-06-01"))
    r.collect_events()
    r.lift_rule("online_subscriptions_closed", t("2020-07-01"), t("2020-07-01"), WHO)
    ((name, event),) = recorded(r)
    assert (name, event["rule"], event["command_id"]) == (
        "RegionRuleLifted",
        "online_subscriptions_closed",
        "cmd-9",
    )
    assert r.state_at().rules_on == {}


def test_lifting_a_rule_not_in_force_is_rejected() -> None:
    with pytest.raises(Rejected, match="registration_suspended is not in force in CN at 2020"):
        opened().lift_rule("registration_suspended", t("2020-06-01"), t("2020-06-01"))


def test_authorize_partner_records_the_partner() -> None:
    r = opened()
    r.authorize_partner("Bizconf", t("2020-08-23"), t("2020-08-03"), WHO)
    ((name, event),) = recorded(r)
    assert (name, event["partner"], event["effective_at"]) == (
        "PartnerAuthorized",
        "Bizconf",
        t("2020-08-23"),
    )
    assert list(r.state_at(t("2020-08-23")).partners) == ["Bizconf"]


def test_authorizing_a_partner_twice_is_rejected() -> None:
    r = opened()
    r.authorize_partner("Bizconf", t("2020-08-23"), t("2020-08-03"))
    with pytest.raises(Rejected, match="'Bizconf' is already an authorized partner in CN"):
        r.authorize_partner("Bizconf", t("2020-09-01"), t("2020-09-01"))


def test_a_rejected_region_command_records_nothing() -> None:
    r = opened()
    facts = list(r.facts)
    with pytest.raises(Rejected):
        r.lift_rule("direct_sales_closed", t("2020-06-01"), t("2020-06-01"))
    assert (recorded(r), r.facts) == ([], facts)


def test_region_rules_read_the_same_state_as_the_aggregate() -> None:
    r = opened()
    r.apply_rule("free_hosting_suspended", t("2020-05-19"), t("2020-05-19"))
    r.authorize_partner("Umeet", t("2020-08-23"), t("2020-08-03"))
    as_facts = RegionRules("CN", r.facts)
    for at in (None, t("2020-05-18"), t("2020-06-01"), t("2020-09-01")):
        assert as_facts.state_at(at).same_as(r.state_at(at))
    assert as_facts.state_at(known=t("2020-08-02")).same_as(r.state_at(known=t("2020-08-02")))


def test_replaying_the_recorded_events_rebuilds_the_same_facts() -> None:
    r = Region(region="CN", effective_at=t("2020-01-01"), recorded_at=t("2020-01-01"))
    r.apply_rule("free_hosting_suspended", t("2020-05-19"), t("2020-05-19"))
    r.lift_rule("free_hosting_suspended", t("2020-07-01"), t("2020-07-01"))
    replayed: Region | None = None
    for e in r.collect_events():
        replayed = e.mutate(replayed)
    assert replayed is not None and replayed.facts == r.facts and replayed.code == "CN"
