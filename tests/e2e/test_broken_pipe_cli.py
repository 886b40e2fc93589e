"""Every command whose reader goes away (`entitlements ... | head -1`) exits 141, quietly:
no traceback, no "Exception ignored", not rich's silent 1; and `audit export --output F`'s
confirmation is one line on a narrow terminal (issue 17, item 13)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, scenario_file
from tests.e2e.test_cli import run


@pytest.fixture(scope="module")
def china(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("pipe")
    url = f"sqlite:///{folder / 'store.db'}"
    assert run(url, "apply", str(scenario_file("china-2020.jsonl"))).returncode == 1
    return url


def with_reader_gone(store_url: str, *args: str) -> tuple[int, str]:
    """Run the command with its stdout's reading end closed before it prints anything
    (what `| head -1` does to a longer output, without the race): exit code, stderr."""
    env = {**os.environ, "ENTITLEMENTS_DB": store_url}
    process = subprocess.Popen(
        [CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read()
    return process.wait(timeout=120), stderr


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "jurisdiction", "CN"],  # the issue's: rich printed, exit 1 silently
        ["audit", "verify"],
        ["audit", "export", "cn-free-01", "--format", "csv"],
        ["check", "cn-free-01", "host", "--at", "2020-06-01"],
        ["check", "cn-free-01", "host", "--json"],
        ["history", "cn-free-01"],
        ["rejections", "--json"],
        ["token", "list"],
    ],
    ids=lambda c: "-".join(c[:2]),
)
def test_a_reader_gone_away_is_exit_141_quietly(china: str, command: list[str]) -> None:
    code, stderr = with_reader_gone(china, *command)
    assert (code, stderr) == (141, "")


def test_help_whose_reader_went_away_is_quiet_too(china: str) -> None:
    """argparse drops a failed write of its help itself, then exits 0: quiet, as asked."""
    assert with_reader_gone(china, "--help") == (0, "")


def test_the_export_confirmation_is_one_line_on_a_narrow_terminal(
    china: str, tmp_path: Path
) -> None:
    target = tmp_path / "case.json"
    env = {**os.environ, "ENTITLEMENTS_DB": china, "COLUMNS": "40"}
    result = subprocess.run(
        [CLI, "audit", "export", "cn-free-01", "--format", "json", "--output", str(target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"case file written to {target}: ") and "head position" in line
