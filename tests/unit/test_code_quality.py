"""Code quality gates, run as tests so CI fails on them: `ruff format --check`, `ruff check`
and `mypy --strict` (settings in pyproject.toml), each a subprocess of this interpreter,
failing with the tool's own output.

mypy checks every module of the four packages (`MYPY_STRICT`): the engine, the
projections, the benchmarks and the tests.

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

#: Every package, relative to the repository root: all of it passes mypy --strict.
MYPY_STRICT = ["entitlements", "projections", "benchmarks", "tests"]


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


def test_imports_keep_to_the_layers_import_linter_is_given() -> None:
    """pyproject.toml's [tool.importlinter] contracts: the domain, projections, the
    application and the doors, each importing only downward."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_listed_modules_pass_mypy_strict() -> None:
    missing = [m for m in MYPY_STRICT if not (ROOT / m).exists()]
    assert not missing, f"MYPY_STRICT names modules that do not exist: {missing}"
    run("mypy", "--strict", "--follow-imports=silent", *MYPY_STRICT)
