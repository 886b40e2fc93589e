"""The CLI contract of DOMAIN.md, through the installed `entitlements` console script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, read_jsonl, scenario_file
from tests.e2e.cli_runner import entitlements


def run(store_url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command in this process (cli_runner.py); the console script's own tests below."""
    return entitlements(*args, env={**os.environ, "ENTITLEMENTS_DB": store_url}, cwd=cwd)


@pytest.fixture
def applied(store_url: str) -> str:
    result = run(store_url, "apply", str(scenario_file("china-2020.jsonl")))
    assert result.returncode == 1, result.stderr  # the scenario has rejected lines
    return result.stdout


def test_apply_prints_one_result_per_line_as_the_scenario_says(applied: str) -> None:
    printed = [json.loads(line) for line in applied.splitlines()]
    expected = read_jsonl(scenario_file("china-2020.apply.jsonl"))
    assert [(p["line"], p["status"]) for p in printed] == [
        (e["line"], e["status"]) for e in expected
    ]
    assert all(p["reason"] for p in printed if p["status"] == "rejected")


def test_apply_exits_0_when_every_line_applies(store_url: str, tmp_path: Path) -> None:
    f = tmp_path / "ok.jsonl"
    f.write_text(
        '{"command": "authorize_partner", "region": "CN", "partner": "P", "effective_at": "2020-01-01", "recorded_at": "2020-01-01"}\n'
    )
    assert run(store_url, "apply", str(f)).returncode == 0


def test_a_malformed_file_is_refused_whole_with_line_and_field_and_changes_nothing(
    store_url: str, applied: str, tmp_path: Path
) -> None:
    before = run(store_url, "history", "cn-free-01", "--json").stdout
    f = tmp_path / "bad.jsonl"
    f.write_text(
        '{"command": "revoke_hosting", "account_id": "cn-free-01", "reason": "x", "effective_at": "2020-12-01", "recorded_at": "2020-12-01"}\n'
        '{"command": "open_subscription", "account_id": "cn-free-01", "plan": "gold", "channel": "online", "effective_at": "2020-12-02"}\n'
    )
    result = run(store_url, "apply", str(f))
    assert result.returncode == 2
    assert "line 2" in result.stderr and "plan" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert run(store_url, "history", "cn-free-01", "--json").stdout == before


def test_bad_json_is_refused_with_its_line(store_url: str, tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(
        '{"command": "authorize_partner", "region": "CN", "partner": "P", "effective_at": "2020-01-01"}\n{not json\n'
    )
    result = run(store_url, "apply", str(f))
    assert result.returncode == 2 and "line 2" in result.stderr


def test_check_json_has_the_contract_fields(store_url: str, applied: str) -> None:
    result = run(store_url, "check", "cn-free-01", "host", "--at", "2020-05-19", "--json")
    assert result.returncode == 0
    d = json.loads(result.stdout)
    assert {"account_id", "capability", "allowed", "reason", "because", "position", "value"} <= set(
        d
    )
    assert d["allowed"] is False and d["value"] is None
    (cause_event,) = d["because"]
    assert cause_event["type"] == "HostingRevoked"
    assert {"type", "version", "effective_at", "recorded_at", "cause"} <= set(cause_event)
    assert cause_event["cause"]["rule"] == "free_hosting_suspended"


def test_check_as_known_at_answers_what_we_believed(store_url: str, applied: str) -> None:
    args = ("check", "cn-ent-02", "host", "--at", "2020-10-01", "--json")
    assert (
        json.loads(run(store_url, *args, "--as-known-at", "2020-10-20").stdout)["allowed"] is True
    )
    assert json.loads(run(store_url, *args).stdout)["allowed"] is False


def test_check_of_a_limit_reports_its_value(store_url: str, applied: str) -> None:
    d = json.loads(
        run(
            store_url, "check", "cn-pro-01", "max_participants", "--at", "2020-08-11", "--json"
        ).stdout
    )
    assert (d["allowed"], d["value"]) == (True, 300)


def test_check_of_an_unknown_account_exits_3(store_url: str, applied: str) -> None:
    result = run(store_url, "check", "nobody", "host")
    assert result.returncode == 3 and "nobody" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [("cn-free-01", "fly"), ("cn-free-01", "host", "--at", "yesterday-ish")]
)
def test_check_with_a_bad_capability_or_time_exits_2(
    store_url: str, applied: str, args: tuple[str, ...]
) -> None:
    result = run(store_url, "check", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("fly" in result.stderr) or ("at" in result.stderr)


def test_capabilities_lists_every_capability(store_url: str, applied: str) -> None:
    d = json.loads(
        run(store_url, "capabilities", "cn-pro-01", "--at", "2020-08-24", "--json").stdout
    )
    answers = {c["capability"]: (c["allowed"], c["value"]) for c in d["capabilities"]}
    assert answers == {
        "join": (True, None),
        "host": (True, None),
        "subscribe_online": (False, None),
        "purchase_direct": (False, None),
        "purchase_via_partner": (True, None),
        "max_participants": (True, 300),
        "max_meeting_minutes": (True, 1440),
        # rule 10, for every region the store knows (no isolation, no choice in this story)
        "route_via:CN": (True, None),
        "route_via:HK": (True, None),
        "route_via:US": (True, None),
    }
    assert "capability" in run(store_url, "capabilities", "cn-pro-01").stdout  # the table


def test_history_shows_both_clocks_and_causes_in_log_order(store_url: str, applied: str) -> None:
    events = json.loads(run(store_url, "history", "cn-ent-02", "--json").stdout)
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    revoked = events[-1]
    assert (revoked["type"], revoked["effective_at"], revoked["recorded_at"]) == (
        "HostingRevoked",
        "2020-09-15T00:00:00Z",
        "2020-11-01T00:00:00Z",
    )
    assert "HostingRevoked" in run(store_url, "history", "cn-ent-02").stdout


def test_the_default_store_is_an_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENTITLEMENTS_DB"}
    f = tmp_path / "cmds.jsonl"
    f.write_text(
        '{"command": "authorize_partner", "region": "CN", "partner": "P", "effective_at": "2020-01-01"}\n'
    )
    result = subprocess.run(
        [CLI, "apply", str(f)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "entitlements.db").exists()


def test_an_unusable_store_url_is_a_clear_error(tmp_path: Path) -> None:
    result = run("mysql://nowhere/db", "history", "x")
    assert result.returncode == 2 and "unsupported store" in result.stderr


def test_demo_runs_the_story_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [CLI, "demo"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "cn-free-02" in result.stdout and "as known at 2020-10-20: yes" in result.stdout


def test_help_teaches_the_commands() -> None:
    result = subprocess.run([CLI, "--help"], capture_output=True, text=True, timeout=60)
    for word in ("apply", "check", "capabilities", "history", "demo", "--db", "as-known-at"):
        assert word in result.stdout
