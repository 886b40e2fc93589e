"""Code quality gates, run as tests so CI fails on them: `ruff format --check`, `ruff check`
and `mypy --strict` (settings in pyproject.toml), each a subprocess of this interpreter,
failing with the tool's own output.

mypy checks the modules of `MYPY_STRICT`, the ones that pass today; extend the list as
modules are brought up to --strict, until it is every module. Modules they import are
type-checked too, but only errors in the listed ones count (--follow-imports=silent).

These run in CI and never skip. They spawn processes (mypy takes ~15 s without its cache),
hence the `slow` marker: `pytest -m "not slow"` leaves them out of a quick local run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: Modules (files or packages, relative to the repository root) that pass mypy --strict.
MYPY_STRICT = [
    "entitlements/__init__.py",
    "entitlements/account.py",
    "entitlements/audit.py",
    "entitlements/cli.py",
    "entitlements/command_log.py",
    "entitlements/command_book.py",
    "entitlements/commands.py",
    "entitlements/engine.py",
    "entitlements/http.py",
    "entitlements/region.py",
    "entitlements/rules.py",
    "entitlements/serving.py",
    "entitlements/store.py",
    "entitlements/tokens.py",
    "projections",
    "benchmarks",
    "tests/conftest.py",
    "tests/e2e",
    "tests/integration/__init__.py",
    "tests/integration/tamper.py",
    "tests/integration/test_audit.py",
    "tests/integration/test_changes.py",
    "tests/integration/test_command_book.py",
    "tests/integration/test_concurrency.py",
    "tests/integration/test_equivalence.py",
    "tests/integration/test_event_versions.py",
    "tests/integration/test_exactly_once.py",
    "tests/integration/test_group_commit.py",
    "tests/integration/test_read_models.py",
    "tests/integration/test_reliability.py",
    "tests/integration/test_replay.py",
    "tests/integration/test_scenario.py",
    "tests/integration/test_snapshot.py",
    "tests/integration/test_state_intervals.py",
    "tests/unit",
]


def run(*args: str) -> None:
    """Run `python -m <args>` at the repository root; fail with its output unless it exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(args[:3])} exited {done.returncode}:\n{done.stdout}{done.stderr}",
            pytrace=False,
        )


def test_the_code_is_formatted_by_ruff() -> None:
    run("ruff", "format", "--check", ".")


def test_ruff_finds_no_lint() -> None:
    run("ruff", "check", ".")


def test_the_listed_modules_pass_mypy_strict() -> None:
    missing = [m for m in MYPY_STRICT if not (ROOT / m).exists()]
    assert not missing, f"MYPY_STRICT names modules that do not exist: {missing}"
    run("mypy", "--strict", "--follow-imports=silent", *MYPY_STRICT)
