"""`route_via:R`, `choose_data_regions` and `audit residency` through the doors: the installed
`entitlements` console script and the HTTP app (FastAPI's TestClient), on SQLite and
PostgreSQL. Bad input is one line naming the field, exit 2 / 422, nothing recorded."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from entitlements.application.access import open_tokens
from entitlements.http.app import create_app
from tests.conftest import scenario_file
from tests.e2e.cli_runner import entitlements

SCENARIO = scenario_file("residency-2020.jsonl")


def run(store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (cli_runner.py)."""
    return entitlements(*args, env={**os.environ, "ENTITLEMENTS_DB": store_url})


@pytest.fixture
def applied(store_url: str) -> str:
    result = run(store_url, "apply", str(SCENARIO))
    assert result.returncode == 1, result.stderr  # lines 7 and 8 are rejected
    return store_url


def test_check_and_capabilities_answer_route_via_with_its_because(applied: str) -> None:
    done = run(applied, "check", "us-ent-01", "route_via:HK", "--at", "2020-04-20", "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert (d["capability"], d["allowed"], d["value"]) == ("route_via:HK", False, None)
    assert [b["type"] for b in d["because"]] == ["DataRegionsChosen", "AccountRegistered"]
    assert d["because"][0]["recorded_at"] == "2020-04-15T00:00:00Z"
    done = run(applied, "capabilities", "de-pro-01", "--at", "2020-05-02", "--json")
    listed = {c["capability"]: c["allowed"] for c in json.loads(done.stdout)["capabilities"]}
    assert {k: v for k, v in listed.items() if k.startswith("route_via:")} == {
        "route_via:CN": False,
        "route_via:DE": True,
        "route_via:US": True,
    }


@pytest.mark.parametrize("capability", ["route_via:hk", "route_via:HKG", "route_via"])
def test_a_bad_route_via_is_exit_2_one_line_naming_it(applied: str, capability: str) -> None:
    done = run(applied, "check", "us-ent-01", capability)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"unknown capability {capability!r}" in done.stderr


def test_explain_cites_the_isolations_region_event(applied: str) -> None:
    done = run(applied, "explain", "us-free-01", "route_via:CN", "--at", "2020-04-20", "--json")
    assert done.returncode == 0, done.stderr
    e = json.loads(done.stdout)
    assert (e["allowed"], e["region"], e["check_agrees"]) == (False, "US", True)
    assert e["holds"] == {"since": "2020-04-18T00:00:00Z", "until": None}
    (link,) = e["because"]
    assert (link["stream"], link["type"], link["recorded_at"]) == (
        "region:CN",
        "RegionRuleApplied",
        "2020-04-14T00:00:00Z",
    )


def test_a_malformed_choice_is_refused_whole_exit_2_nothing_recorded(
    applied: str, tmp_path: Path
) -> None:
    before = run(applied, "history", "us-ent-01", "--json").stdout
    f = tmp_path / "bad.jsonl"
    good = {
        "command": "choose_data_regions",
        "account_id": "us-ent-01",
        "regions": ["US"],
        "effective_at": "2020-05-01",
    }
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "regions": ["US", "US"]}) + "\n")
    done = run(applied, "apply", str(f))
    assert done.returncode == 2
    assert "line 2, field 'regions'" in done.stderr and "listed twice" in done.stderr
    assert run(applied, "history", "us-ent-01", "--json").stdout == before


def test_audit_residency_holds_for_the_scenario(applied: str) -> None:
    done = run(applied, "audit", "residency", "CN", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["holds"] and not report["violations"]
    (switch,) = report["isolation"]
    assert (switch["effective_at"], switch["recorded_at"]) == (
        "2020-04-18T00:00:00Z",
        "2020-04-14T00:00:00Z",
    )
    assert switch["clocks"] == "recorded 4 days ahead of taking effect"
    assert {a["account_id"] for a in report["accounts"]} == {"us-free-01", "us-ent-01", "de-pro-01"}
    for a in report["accounts"]:
        assert all(i["until"] == "2020-04-18T00:00:00Z" for i in a["as_known_now"])
    assert report["exposure"]["until"] == "2020-04-18T00:00:00Z"
    text = run(applied, "audit", "residency", "CN")
    assert text.returncode == 0 and "holds:" in text.stdout


def test_a_backdated_isolation_is_a_violation_exit_6(store_url: str, tmp_path: Path) -> None:
    lines = [
        {
            "command": "register_account",
            "account_id": "us-1",
            "region": "US",
            "plan": "free",
            "channel": "online",
            "effective_at": "2020-01-05",
            "recorded_at": "2020-01-05",
        },
        {
            "command": "apply_region_rule",
            "region": "CN",
            "rule": "data_centre_isolated",
            "effective_at": "2020-04-18",
            "recorded_at": "2020-05-01",
        },
    ]
    f = tmp_path / "backdated.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert run(store_url, "apply", str(f)).returncode == 0
    done = run(store_url, "audit", "residency", "CN", "--json")
    assert done.returncode == 6, done.stderr
    (v,) = json.loads(done.stdout)["violations"]
    assert (v["account_id"], v["since"], v["until"]) == (
        "us-1",
        "2020-04-18T00:00:00Z",
        "2020-05-01T00:00:00Z",
    )
    assert v["rule_event"]["clocks"] == "backdated: recorded 13 days after taking effect"
    text = run(store_url, "audit", "residency", "CN")
    assert text.returncode == 6 and "VIOLATION" in text.stdout
    bad = run(store_url, "audit", "residency", "cn")
    assert bad.returncode == 2 and "region" in bad.stderr


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def served(applied: str) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    tokens = open_tokens(applied)
    headers = {
        role: {"Authorization": f"Bearer {tokens.create(f'{role}-1', role)}"}
        for role in ("checker", "auditor", "admin")
    }
    with TestClient(create_app(applied, follow=False), raise_server_exceptions=False) as client:
        yield client, headers


def test_http_answers_route_via_and_refuses_a_bad_one_naming_the_field(
    served: tuple[TestClient, dict[str, Any]],
) -> None:
    client, headers = served
    r = client.get(
        "/v1/accounts/us-ent-01/can/route_via:DE",
        params={"at": "2020-04-20"},
        headers=headers["checker"],
    )
    assert r.status_code == 200 and r.json()["allowed"] is True
    now = client.get("/v1/accounts/cn-free-r1/can/route_via:CN", headers=headers["checker"])
    assert now.status_code == 200 and now.json()["allowed"] is True
    bad = client.get("/v1/accounts/us-ent-01/can/route_via:de", headers=headers["checker"])
    assert (bad.status_code, bad.json()["field"]) == (422, "capability")
    caps = client.get("/v1/accounts/us-free-01/capabilities", headers=headers["checker"])
    assert "route_via:CN" in {c["capability"] for c in caps.json()["capabilities"]}
    explained = client.get(
        "/v1/accounts/us-free-01/explain/route_via:CN",
        params={"at": "2020-04-20"},
        headers=headers["auditor"],
    )
    assert explained.status_code == 200 and explained.json()["allowed"] is False


def test_http_records_a_choice_and_refuses_a_malformed_one(
    served: tuple[TestClient, dict[str, Any]],
) -> None:
    client, headers = served
    command = {
        "command": "choose_data_regions",
        "account_id": "us-ent-01",
        "regions": ["US", "HK"],
        "effective_at": "2020-05-15",
    }
    r = client.post("/v1/commands", json=command, headers=headers["admin"])
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["status"] == "applied"
    hk = client.get(
        "/v1/accounts/us-ent-01/can/route_via:HK",
        params={"at": "2020-05-20", "min_position": result["position"]},
        headers=headers["checker"],
    )
    assert hk.json()["allowed"] is True
    bad = client.post("/v1/commands", json={**command, "regions": []}, headers=headers["admin"])
    assert bad.status_code == 422 and "regions" in bad.text


def test_report_counts_route_via_per_day_and_refuses_a_bad_one(applied: str) -> None:
    """The analysts' daily counts of route_via:CN for US accounts: both of them until the
    isolation takes effect (18 April), none after (as known now); as known on 13 April,
    before it was recorded, both all along."""
    args = ("report", "US", "--from", "2020-04-16", "--to", "2020-04-19")
    done = run(applied, *args, "--capability", "route_via:CN", "--json")
    assert done.returncode == 0, done.stderr
    (series,) = json.loads(done.stdout)["series"]
    assert series["capability"] == "route_via:CN"
    assert [d["total"] for d in series["days"]] == [2, 2, 0, 0]
    before = run(applied, *args, "--capability", "route_via:CN", "--as-known-at", "2020-04-13")
    assert before.returncode == 0, before.stderr
    known = run(
        applied, *args, "--capability", "route_via:CN", "--as-known-at", "2020-04-13", "--json"
    )
    assert [d["total"] for d in json.loads(known.stdout)["series"][0]["days"]] == [2, 2, 2, 2]
    bad = run(applied, *args, "--capability", "route_via:cn")
    assert bad.returncode == 2 and "--capability" in bad.stderr
