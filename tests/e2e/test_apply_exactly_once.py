"""`entitlements apply` through the console script: results streamed as each line is
decided, the same file twice, a closed pipe, and SIGKILLs at random points (DOMAIN.md,
"The command file and the CLI contract")."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from entitlements import open_engine
from tests.conftest import CLI, read_jsonl, scenario_file
from tests.e2e.cli_runner import entitlements


def env_for(store_url: str) -> dict[str, str]:
    return {**os.environ, "ENTITLEMENTS_DB": store_url}


def apply(store_url: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`apply` in this process (cli_runner.py); the runs killed halfway are real processes."""
    return entitlements("apply", str(path), env=env_for(store_url))


def command_file(tmp_path: Path, accounts: int) -> Path:
    """Per account: a sign-up, a revocation, a restoration (no ids, no recorded_at: ids
    derive from each line's content)."""
    lines = []
    for i in range(accounts):
        a = f"acc-{i:04d}"
        lines += [
            {
                "command": "register_account",
                "account_id": a,
                "region": "US",
                "plan": "pro",
                "channel": "online",
                "effective_at": "2020-01-01",
            },
            {
                "command": "revoke_hosting",
                "account_id": a,
                "reason": "review",
                "effective_at": "2020-02-01",
            },
            {
                "command": "restore_hosting",
                "account_id": a,
                "reason": "cleared",
                "effective_at": "2020-03-01",
            },
        ]
    path = tmp_path / "commands.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_applying_the_same_file_twice_records_nothing_twice_and_answers_the_same(
    store_url: str,
) -> None:
    path = scenario_file("china-2020.jsonl")
    first = apply(store_url, path)
    with open_engine(store_url) as engine:
        position = engine.position()
    second = apply(store_url, path)
    assert first.returncode == second.returncode == 1, second.stderr
    one, two = ([json.loads(x) for x in r.stdout.splitlines()] for r in (first, second))
    assert all(r["duplicate"] for r in two) and not any("duplicate" in r for r in one)
    assert [{k: v for k, v in r.items() if k != "duplicate"} for r in two] == one
    with open_engine(store_url) as engine:
        assert engine.position() == position


def test_each_result_is_printed_as_soon_as_its_line_is_decided(
    store_url: str, tmp_path: Path
) -> None:
    path = command_file(tmp_path, 150)
    with subprocess.Popen(
        [CLI, "apply", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(store_url),
    ) as proc:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        still_running = proc.poll() is None
        rest = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait(120)
    assert (first["line"], first["status"], first["command_id"].startswith("auto:")) == (
        1,
        "applied",
        True,
    )
    assert still_running, "the first result came only when the whole file was done"
    assert len(rest.splitlines()) == 449 and proc.returncode == 0


def test_a_reader_that_goes_away_ends_the_run_quietly(store_url: str, tmp_path: Path) -> None:
    path = command_file(tmp_path, 100)
    shell = subprocess.run(
        ["bash", "-c", f'"{CLI}" apply "{path}" | head -1; echo "${{PIPESTATUS[0]}}" >&2'],
        capture_output=True,
        text=True,
        env=env_for(store_url),
        timeout=120,
    )
    assert json.loads(shell.stdout)["line"] == 1
    assert "BrokenPipe" not in shell.stderr and "Traceback" not in shell.stderr
    assert shell.stderr.strip().splitlines()[-1] == "141"
    again = apply(store_url, path)  # the rest is applied by running the file again
    assert again.returncode == 0
    results = [json.loads(x) for x in again.stdout.splitlines()]
    assert results[0]["duplicate"] and len(results) == 300


@pytest.mark.slow
@pytest.mark.timing
def test_killed_at_ten_random_points_then_run_again_every_command_is_in_the_log_once(
    store_url: str, tmp_path: Path
) -> None:
    path = command_file(tmp_path, 200)
    lines = len(read_jsonl(path))
    rng = random.Random(os.environ.get("CRASH_SEED", "20"))
    printed: list[dict[str, Any]] = []
    for _ in range(10):
        stop_after = rng.randint(1, lines // 10)  # new results to see before the kill
        with subprocess.Popen(
            [CLI, "apply", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env_for(store_url),
        ) as proc:
            new = 0
            for raw in proc.stdout:  # type: ignore[union-attr]
                result = json.loads(raw)
                printed.append(result)
                new += not result.get("duplicate")
                if new >= stop_after:
                    break
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    final = apply(store_url, path)
    assert final.returncode == 0, final.stderr
    results = [json.loads(x) for x in final.stdout.splitlines()]
    assert [r["line"] for r in results] == list(range(1, lines + 1))
    assert all(r["status"] == "applied" for r in results)
    by_line = {r["line"]: r for r in results}
    for shown in printed:  # every line printed before a kill was applied, at that position
        assert by_line[shown["line"]]["duplicate"] is True
        assert (by_line[shown["line"]]["command_id"], by_line[shown["line"]]["position"]) == (
            shown["command_id"],
            shown["position"],
        )
    with open_engine(store_url) as engine:
        records = Counter(
            getattr(engine.app.mapper.to_domain_event(n), "command_id")  # noqa: B009 (a record)
            for n in engine.app.recorder.select_notifications(start=1, limit=1_000_000)
            if n.topic in ("entitlements:CommandApplied", "entitlements:CommandRejected")
        )
        assert set(records.values()) == {1} and len(records) == lines  # each command once
        for i in (0, 77, 199):
            history = [e["type"] for e in engine.history(f"acc-{i:04d}")]
            assert history == ["AccountRegistered", "HostingRevoked", "HostingRestored"]


def test_history_and_the_rejection_log_show_who_asked_to_people_and_machines(
    store_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "asked.jsonl"
    lines = [
        {
            "command": "register_account",
            "account_id": "us-1",
            "region": "US",
            "plan": "pro",
            "channel": "online",
            "effective_at": "2020-01-01",
            "actor": "crm [/bold]",
            "command_id": "crm-1",
        },
        {
            "command": "suspend_account",
            "account_id": "us-1",
            "jurisdiction": "CN",
            "reason": "request [red]",
            "effective_at": "2020-06-01",
            "actor": "gov-liaison",
        },
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert apply(store_url, path).returncode == 1

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return entitlements(*args, env=env_for(store_url))

    (event,) = json.loads(cli("history", "us-1", "--json").stdout)
    assert (event["actor"], event["command_id"]) == ("crm [/bold]", "crm-1")
    table = cli("history", "us-1")
    assert table.returncode == 0 and "crm [/bold]" in table.stdout and "crm-1" in table.stdout
    (entry,) = json.loads(cli("rejections", "--json").stdout)
    assert (entry["command"], entry["actor"], entry["account_id"], entry["region"]) == (
        "suspend_account",
        "gov-liaison",
        "us-1",
        "US",
    )
    assert entry["request"]["reason"] == "request [red]" and "jurisdiction CN" in entry["reason"]
    people = cli("rejections", "--account", "us-1")
    assert (
        people.returncode == 0
        and "gov-liaison" in people.stdout
        and "suspend_account" in people.stdout
    )
    assert json.loads(cli("rejections", "--region", "CN", "--json").stdout) == []
    assert "no rejected command" in cli("rejections", "--region", "CN").stdout
