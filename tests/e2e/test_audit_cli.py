"""The auditors' commands through the installed console script: explain, history as known
at K, audit jurisdiction (exit 0, and 6 on a tampered store), audit export; hostile input."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from entitlements import open_engine
from entitlements.domain.account import Account
from entitlements.domain.rules import Fact
from tests.conftest import StoreCopies, scenario_file
from tests.e2e.test_cli import run

GOV = {
    "command": "revoke_hosting",
    "account_id": "cn-pro-01",
    "reason": "[bold]state[/bold] :smile: request",
    "jurisdiction": "CN",
    "actor": "[red]cn-gov[/red]",
    "command_id": "cn-gov-1",
    "effective_at": "2020-11-02",
    "recorded_at": "2020-11-02",
}


@pytest.fixture
def china(store_url: str, store_copies: StoreCopies) -> str:
    """A copy of the china-2020 store, plus a CN request on a CN account (applied) and one
    on an HK account (rejected: outside CN's jurisdiction). Built once per module and store
    kind, through the console script; each test may change its own copy."""
    return store_copies.copy(store_url, build_china)


def build_china(store_url: str, folder: Path) -> None:
    assert run(store_url, "apply", str(scenario_file("china-2020.jsonl"))).returncode == 1
    extra = folder / "gov.jsonl"
    lines = [GOV, {**GOV, "account_id": "hk-free-01", "command_id": "cn-gov-hk"}]
    extra.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = run(store_url, "apply", str(extra))
    assert [json.loads(x)["status"] for x in result.stdout.splitlines()] == [
        "applied",
        "rejected",
    ]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    stderr = result.stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr


# -- explain ---------------------------------------------------------------------------------


def test_explain_cites_the_revocation_the_rule_and_the_region_event(china: str) -> None:
    result = run(china, "explain", "cn-free-01", "host", "--at", "2020-05-19")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for needle in (
        "HostingRevoked",
        "free_hosting_suspended",
        "RegionRuleApplied",
        "since 2020-05-19",
    ):
        assert needle in text, text
    x = json.loads(
        run(china, "explain", "cn-free-01", "host", "--at", "2020-05-19", "--json").stdout
    )
    check = json.loads(
        run(china, "check", "cn-free-01", "host", "--at", "2020-05-19", "--json").stdout
    )
    assert (x["allowed"], x["value"], x["reason"]) == (
        check["allowed"],
        check["value"],
        check["reason"],
    )
    assert x["because"][0]["rule"]["event"]["type"] == "RegionRuleApplied"
    assert x["holds"]["since"] == "2020-05-19T00:00:00Z"


def test_explain_as_known_at_and_markup_in_reasons(china: str) -> None:
    x = json.loads(
        run(china, "explain", "cn-pro-01", "host", "--at", "2020-11-03", "--json").stdout
    )
    assert x["allowed"] is False and "[bold]state[/bold] :smile: request" in x["reason"]
    assert x["because"][0]["actor"] == "[red]cn-gov[/red]"
    text = run(china, "explain", "cn-pro-01", "host", "--at", "2020-11-03").stdout
    assert "[bold]state[/bold] :smile: request" in text and "[red]cn-gov[/red]" in text
    before = run(
        china, "explain", "cn-ent-02", "host", "--at", "2020-10-01", "--as-known-at", "2020-10-20"
    ).stdout
    assert ": yes" in before and "as known at 2020-10-20" in before


ERRORS: list[tuple[tuple[str, ...], int, str]] = [
    (("explain", "nobody", "host"), 3, "nobody"),
    (("explain", "[/]", "host"), 3, "[/]"),
    (("explain", "cn-free-01", "hots"), 2, "hots"),
    (("explain", "cn-free-01", "host", "--at", "[red]2020"), 2, "at: '[red]2020'"),
    (("explain", "cn-free-01", "host", "--as-known-at", "2020-02-30"), 2, "as_known_at"),
    (("history", "nobody", "--as-known-at", "2020-01-01"), 3, "nobody"),
    (("history", "cn-free-01", "--as-known-at", "soon"), 2, "as_known_at"),
    (("audit", "jurisdiction", "cn"), 2, "region"),
    (("audit", "jurisdiction", "[b]X"), 2, "region"),
    (("audit", "export", "nobody", "--format", "json"), 3, "nobody"),
    (("audit", "export", "--format", "json"), 2, "scope"),
    (("audit", "export", "cn-free-01", "--region", "CN", "--format", "csv"), 2, "scope"),
    (("audit", "export", "cn-free-01", "--format", "json", "--from", "x"), 2, "from"),
    (("audit", "export", "--region", "ZZ", "--format", "json"), 2, "region"),
]


def test_errors_are_one_line_naming_the_field(china: str) -> None:
    for args, code, needle in ERRORS:
        result = run(china, *args)
        assert result.returncode == code, (args, result.stderr)
        assert needle in one_line_error(result), args
        assert result.stdout == "", args


def test_help_teaches_with_an_example(china: str) -> None:
    for args in (
        ("explain", "--help"),
        ("history", "--help"),
        ("audit", "jurisdiction", "--help"),
        ("audit", "export", "--help"),
    ):
        result = run(china, *args)
        assert result.returncode == 0 and "entitlements " + args[0] in result.stdout, args
        assert "example" in result.stdout, args


# -- history ---------------------------------------------------------------------------------


def test_history_without_the_new_flags_is_unchanged(china: str) -> None:
    events = json.loads(run(china, "history", "cn-pro-01", "--json").stdout)
    assert all("kind" not in e for e in events)
    assert "rejection" not in run(china, "history", "cn-pro-01").stdout


def test_history_as_known_at_shows_rejections_beside_events(china: str) -> None:
    entries = json.loads(
        run(china, "history", "cn-pro-01", "--as-known-at", "2020-10-01", "--json").stdout
    )
    kinds = [e["kind"] for e in entries]
    assert 0 < kinds.index("rejection") < len(kinds) - 1  # 2 Sep, between the events
    assert all(e["recorded_at"] <= "2020-10-01T00:00:00Z" for e in entries)
    assert not any(e.get("command_id") == "cn-gov-1" for e in entries)  # recorded on 2 Nov
    text = run(china, "history", "cn-pro-01", "--as-known-at", "2020-10-01").stdout
    assert "rejection" in text and "Acme Reseller" in text
    rows = json.loads(run(china, "history", "cn-pro-01", "--rejections", "--json").stdout)
    assert any(e.get("command_id") == "cn-gov-1" for e in rows)


# -- audit jurisdiction ----------------------------------------------------------------------


def test_the_promise_holds_on_the_china_story(china: str) -> None:
    result = run(china, "audit", "jurisdiction", "CN")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "holds" in result.stdout and "hk-free-01" in result.stdout  # the rejected attempt
    report = json.loads(run(china, "audit", "jurisdiction", "CN", "--json").stdout)
    assert report["holds"] and [c["command_id"] for c in report["commands"]] == ["cn-gov-1"]
    assert len(report["rejected"]) == 3


def test_an_injected_cross_jurisdiction_event_exits_6(china: str) -> None:
    with open_engine(china) as engine:
        us: Account = engine.app.repository.get(Account.create_id("us-pro-01"))
        stamp = datetime.now(UTC)
        fact = Fact(
            "account:us-pro-01", "HostingRevoked", us.version + 1, stamp, stamp, {"reason": "x"}
        )
        who = {"actor": "cn-gov", "command_id": "cn-gov-1"}
        engine.app.events.put([Account.event_from_fact("us-pro-01", fact, who)])
    result = run(china, "audit", "jurisdiction", "CN")
    assert result.returncode == 6
    assert "VIOLATION" in result.stdout and "us-pro-01 in US" in result.stdout
    report = json.loads(run(china, "audit", "jurisdiction", "CN", "--json").stdout)
    assert report["holds"] is False and report["violations"][0]["command_id"] == "cn-gov-1"
    assert run(china, "audit", "jurisdiction", "CN", "--json").returncode == 6


# -- audit export ----------------------------------------------------------------------------


def test_export_json_to_stdout_and_csv_to_a_file(china: str, tmp_path: Path) -> None:
    result = run(china, "audit", "export", "cn-free-01", "--format", "json")
    assert result.returncode == 0, result.stderr
    case = json.loads(result.stdout)
    assert case["scope"] == {"account_id": "cn-free-01"} and case["head"]["position"] > 0
    assert {"events", "rejections", "decisions"} <= set(case)
    out = tmp_path / "cn.csv"
    result = run(
        china,
        "audit",
        "export",
        "--region",
        "CN",
        "--from",
        "2020-05-01",
        "--to",
        "2020-12-31",
        "--format",
        "csv",
        "--output",
        str(out),
    )
    assert result.returncode == 0 and result.stdout == "" and "case file written" in result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["kind"] for r in rows} == {"head", "event", "rejection", "decision"}
    assert any("[bold]state[/bold]" in r["reason"] for r in rows)  # data as it is
