"""The auditors' questions (entitlements/application/audit.py) on the china-2020 store, SQLite and
PostgreSQL: explain agrees with check, history as known at K, the jurisdiction promise
(held, and broken by an event written straight into the store), and the case file."""

from __future__ import annotations

import copy
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from entitlements.application import audit, integrity_check
from entitlements.application.engine import Engine
from entitlements.domain.account import Account
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.rules import CAPABILITIES, Fact, UnknownCapability
from tests.conftest import read_jsonl, scenario_file


@pytest.fixture
def china(engine: Engine) -> Engine:
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    return engine


def _gov_command(**extra: Any) -> dict[str, Any]:
    return {
        "command": "revoke_hosting",
        "account_id": "cn-pro-01",
        "reason": "[b]state[/b] request",
        "jurisdiction": "CN",
        "actor": "cn-gov",
        "command_id": "cn-gov-1",
        "effective_at": "2020-11-02",
        "recorded_at": "2020-11-02",
        **extra,
    }


# -- explain ---------------------------------------------------------------------------------


def test_explain_cites_the_rule_and_the_region_event_behind_a_revocation(china: Engine) -> None:
    x = audit.explain(china, "cn-free-01", "host", at="2020-05-19")
    assert x["allowed"] is False and x["check_agrees"] is True
    assert x["holds"] == {"since": "2020-05-19T00:00:00Z", "until": None}
    (link,) = x["because"]
    assert link["type"] == "HostingRevoked" and link["command_id"]
    assert {"effective_at", "recorded_at", "actor", "version"} <= set(link)
    rule = link["rule"]
    assert rule["rule"] == "free_hosting_suspended" and rule["region"] == "CN"
    assert rule["event"]["type"] == "RegionRuleApplied" and rule["event"]["stream"] == "region:CN"
    assert rule["event"]["recorded_at"] == "2020-05-19T00:00:00Z"


def test_explain_agrees_with_check_everywhere_and_the_interval_is_exact(china: Engine) -> None:
    """At every scenario row, and for every capability at a spread of times and knowledge:
    the decision is check's, and decide() gives it across [since, until) and not just
    outside it."""
    times = ["2020-01-01", "2020-05-18", "2020-05-19", "2020-06-15", "2020-08-23", "2020-10-01"]
    for account in ("cn-free-01", "cn-free-02", "cn-ent-02", "cn-pro-01", "hk-free-01"):
        for cap in CAPABILITIES:
            for t in times:
                for k in (None, "2020-08-02", "2020-10-20"):
                    x = audit.explain(china, account, cap, at=t, as_known_at=k)
                    d = china.check(account, cap, at=t, as_known_at=k)
                    assert (x["allowed"], x["value"], x["reason"]) == (
                        d.allowed,
                        d.value,
                        d.reason,
                    )
                    assert x["check_agrees"]
                    since, until = x["holds"]["since"], x["holds"]["until"]
                    same = (d.allowed, d.value, d.reason)
                    for edge, inside in ((since, True), (until, False)):
                        if edge is None:
                            continue
                        e = china.check(account, cap, at=edge, as_known_at=k)
                        assert ((e.allowed, e.value, e.reason) == same) is inside, (account, cap, t)
                    if since is not None:  # and just before `since`, it was something else
                        just_before = datetime.fromisoformat(since) - timedelta(microseconds=1)
                        b = china.check(account, cap, at=just_before, as_known_at=k)
                        assert (b.allowed, b.value, b.reason) != same, (account, cap, t)


def test_explain_of_a_backdated_revocation_as_known_before_and_after(china: Engine) -> None:
    before = audit.explain(china, "cn-ent-02", "host", at="2020-10-01", as_known_at="2020-10-20")
    assert before["allowed"] is True and before["holds"]["until"] is None
    after = audit.explain(china, "cn-ent-02", "host", at="2020-10-01")
    assert after["allowed"] is False
    assert after["holds"]["since"] == "2020-09-15T00:00:00Z"
    (link,) = after["because"]
    assert link["type"] == "HostingRevoked" and link["recorded_at"] == "2020-11-01T00:00:00Z"
    assert "rule" not in link  # a manual revocation: no rule behind it


def test_explain_refuses_unknown_accounts_capabilities_and_bad_times(china: Engine) -> None:
    with pytest.raises(UnknownAccount):
        audit.explain(china, "nobody", "host")
    with pytest.raises(UnknownAccount):
        audit.explain(china, "nobody", "hots")  # the account first, as check does
    with pytest.raises(UnknownCapability):
        audit.explain(china, "cn-free-01", "hots")
    with pytest.raises(ValueError, match="^at: "):
        audit.explain(china, "cn-free-01", "host", at="[red]2020")
    with pytest.raises(ValueError, match="^as_known_at: "):
        audit.explain(china, "cn-free-01", "host", as_known_at="2020-13-01")


# -- history as known at K -------------------------------------------------------------------


def test_history_as_known_at_keeps_only_what_was_recorded_by_then(china: Engine) -> None:
    full = audit.history(china, "cn-ent-02")
    assert [e["type"] for e in full if e["kind"] == "event"] == [
        e["type"] for e in china.history("cn-ent-02")
    ]
    known = audit.history(china, "cn-ent-02", as_known_at="2020-10-20")
    assert "HostingRevoked" not in [e.get("type") for e in known]
    assert all(e["recorded_at"] <= "2020-10-20T00:00:00Z" for e in known)


def test_history_shows_rejections_beside_events_in_log_order(china: Engine) -> None:
    entries = audit.history(china, "cn-pro-01", as_known_at="2020-09-05")
    kinds = [(e["kind"], e.get("type") or e.get("command")) for e in entries]
    assert ("event", "SubscriptionOpened") in kinds  # 10 Aug: direct, before it closed
    assert kinds[-1] == ("rejection", "move_to_partner")  # 2 Sep, an unknown partner
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions) and None not in positions
    assert all(e["reason"] for e in entries if e["kind"] == "rejection")
    early = audit.history(china, "cn-pro-01", as_known_at="2020-09-01")
    assert all(e["kind"] == "event" for e in early)  # no rejection on file yet


# -- the jurisdiction promise ----------------------------------------------------------------


def test_the_china_story_keeps_the_jurisdiction_promise(china: Engine) -> None:
    crafted = _gov_command(account_id="hk-free-01", command_id="cn-gov-hk")
    (r,) = china.apply([crafted])
    assert r.status == "rejected"
    (ok,) = china.apply([_gov_command()])
    assert ok.status == "applied"
    report = audit.jurisdiction(china, "CN")
    assert report["holds"] is True and report["violations"] == []
    (command,) = report["commands"]
    assert command["command_id"] == "cn-gov-1" and command["jurisdiction"] == "CN"
    assert [(a["account_id"], a["region"]) for a in command["accounts"]] == [("cn-pro-01", "CN")]
    rejected = {(x["account_id"], x["command"]) for x in report["rejected"]}
    assert rejected == {
        ("us-pro-01", "suspend_account"),
        ("hk-free-01", "suspend_account"),
        ("hk-free-01", "revoke_hosting"),
    }
    assert all("jurisdiction CN does not reach" in x["reason"] for x in report["rejected"])
    assert report["unproven"] == []
    # free_hosting_suspended reached cn-free-01 only: a rule of CN, inside CN
    reached = {a["account_id"] for c in report["rule_commands"] for a in c["accounts"]}
    assert reached == {"cn-free-01"}


def test_every_applied_account_command_has_a_proved_jurisdiction(china: Engine) -> None:
    """Every applied account command's record names its jurisdiction, and for records from
    before it was kept, the fingerprint proof finds the same one for every kind of account
    command the scenario applies, with or without actor, jurisdiction and recorded_at."""
    china.apply(
        [
            _gov_command(),
            {
                "command": "reinstate_account",
                "account_id": "cn-free-02",
                "reason": "x",
                "effective_at": "2020-11-03",
            },
        ]
    )
    report = audit.jurisdiction(china, "US")
    assert report["holds"] and report["unproven"] == []
    w = audit._walk_commands(china)
    for command_id, (_, rec) in w.applied.items():
        if rec.account_id is None:
            continue
        spec = audit._OWN_EVENT[rec.command]
        own = next(
            c for c in w.changes if c.command_id == command_id and c.type == spec[0] and not c.cause
        )
        assert "jurisdiction" in vars(rec)  # kept on the record since it was added
        older = copy.copy(rec)  # as a record from before: the fingerprint proves the same
        del vars(older)["jurisdiction"]
        assert audit.prove_jurisdiction(older, own) == rec.jurisdiction, rec.command


def test_an_event_written_straight_into_the_store_breaks_the_promise(china: Engine) -> None:
    """cn-gov-1 was a CN request on a CN account; an event on a US account that names it
    (written past the engine, as a tampered store would hold) is a violation."""
    china.apply([_gov_command()])
    us: Account = china.app.repository.get(Account.create_id("us-pro-01"))
    stamp = datetime.now(UTC)
    fact = Fact(
        "account:us-pro-01", "HostingRevoked", us.version + 1, stamp, stamp, {"reason": "x"}
    )
    event = Account.event_from_fact(
        "us-pro-01", fact, {"actor": "cn-gov", "command_id": "cn-gov-1"}
    )
    china.app.events.put([event])
    report = audit.jurisdiction(china, "CN")
    assert report["holds"] is False
    (v,) = report["violations"]
    assert v["command_id"] == "cn-gov-1" and "us-pro-01 in US" in v["violation"]
    assert audit.jurisdiction(china, "US")["holds"] is True  # US asked for nothing


def test_a_region_without_commands_holds_trivially_and_codes_are_checked(china: Engine) -> None:
    assert audit.jurisdiction(china, "FR")["holds"] is True
    with pytest.raises(ValueError, match="^region: "):
        audit.jurisdiction(china, "cn")


# -- the case file ---------------------------------------------------------------------------


def test_a_case_file_of_one_account(china: Engine) -> None:
    case = audit.export_case(china, account_id="cn-pro-01")
    head = integrity_check.verify(china.app)  # the head's hash is the integrity chain's, verified
    assert case["head"] == {"position": china.position(), "hash": head.hash} and head.ok
    types = [e["type"] for e in case["events"] if e["stream"] == "account:cn-pro-01"]
    assert types == [e["type"] for e in china.history("cn-pro-01")]
    assert all({"actor", "command_id", "cause", "position"} <= set(e) for e in case["events"])
    assert {r["command"] for r in case["rejections"]} == {"move_to_partner"}
    at = {(d["at"], d["capability"]): d for d in case["decisions"]}
    d = at[("2020-10-01T00:00:00Z", "host")]
    assert d["allowed"] is False
    assert d == {**d, **{"allowed": china.check("cn-pro-01", "host", "2020-10-01").allowed}}
    assert {c for _, c in at} == set(CAPABILITIES)


def test_a_case_file_of_a_region_within_a_window_and_as_csv(china: Engine) -> None:
    case = audit.export_case(china, region="CN", from_="2020-05-01", to="2020-06-30")
    assert all("2020-05-01" <= e["effective_at"][:10] <= "2020-06-30" for e in case["events"])
    accounts = {d["account_id"] for d in case["decisions"]}
    assert {"cn-free-01", "cn-free-02", "cn-ent-02"} <= accounts and "us-pro-01" not in accounts
    assert {d["at"] for d in case["decisions"]} >= {"2020-05-01T00:00:00Z", "2020-05-19T00:00:00Z"}
    rows = list(csv.DictReader(io.StringIO(audit.case_csv(case))))
    kinds = [r["kind"] for r in rows]
    assert kinds[0] == "head" and rows[0]["position"] == str(case["head"]["position"])
    assert json.loads(rows[0]["details"])["hash"] == case["head"]["hash"] is not None
    assert kinds.count("event") == len(case["events"])
    assert kinds.count("decision") == len(case["decisions"])
    assert kinds.count("rejection") == len(case["rejections"])


def test_a_case_file_refuses_bad_scopes_and_times(china: Engine) -> None:
    with pytest.raises(UnknownAccount):
        audit.export_case(china, account_id="nobody")
    with pytest.raises(ValueError, match="^region: "):
        audit.export_case(china, region="ZZ")
    with pytest.raises(ValueError, match="^from: "):
        audit.export_case(china, account_id="cn-free-01", from_="yesterday")
    with pytest.raises(ValueError, match="^to: "):
        audit.export_case(china, account_id="cn-free-01", from_="2020-06-01", to="2020-05-01")
    with pytest.raises(ValueError, match="^scope: "):
        audit.export_case(china)


def test_a_rule_caused_event_of_the_region_outside_it_is_a_violation(china: Engine) -> None:
    """A HostingRevoked on a US account naming a CN rule as its cause (written past the
    engine, without any command): CN's rules reached outside CN."""
    us: Account = china.app.repository.get(Account.create_id("us-pro-01"))
    stamp = datetime.now(UTC)
    cause = {
        "rule": "free_hosting_suspended",
        "region": "CN",
        "rule_event": {"stream": "region:CN", "type": "RegionRuleApplied", "version": 3},
    }
    fact = Fact(
        "account:us-pro-01",
        "HostingRevoked",
        us.version + 1,
        stamp,
        stamp,
        {"reason": "x"},
        cause,
    )
    china.app.events.put([Account.event_from_fact("us-pro-01", fact)])
    report = audit.jurisdiction(china, "CN")
    assert report["holds"] is False
    assert any("names a rule of CN" in v["violation"] for v in report["violations"])


def test_explain_names_the_event_that_made_a_rule_revocation_necessary(china: Engine) -> None:
    x = audit.explain(china, "cn-pro-01", "host", at="2020-10-01")
    assert x["allowed"] is False and x["holds"]["since"] == "2020-10-01T00:00:00Z"
    (link,) = x["because"]
    assert link["rule"]["event"]["type"] == "RegionRuleApplied"
    assert link["rule"]["trigger"]["type"] == "SubscriptionClosed"
    assert link["rule"]["trigger"]["recorded_at"] == "2020-10-01T00:00:00Z"
