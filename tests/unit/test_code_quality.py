"""Code quality gates, run as tests so CI fails on them: `ruff format --check`, `ruff check`
and `mypy --strict` (settings in pyproject.toml), each a subprocess of this interpreter,
failing with the tool's own output.

mypy checks every module of the four packages (`MYPY_STRICT`): the engine, the
projections, the benchmarks and the tests.

The sizes gate (`test_no_function_or_class_is_too_long_or_too_branched`): over the engine
and the projections, no function longer than a screen (80 lines), no function or method
with radon's cyclomatic complexity over 15, no class over 300 lines.

These run in CI and never skip. They spawn processes (mypy takes ~15 s without its cache),
hence the `slow` marker: `pytest -m "not slow"` leaves them out of a quick local run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from radon.complexity import cc_visit
from radon.visitors import Class, Function

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

#: Every package, relative to the repository root: all of it passes mypy --strict.
MYPY_STRICT = ["entitlements", "projections", "benchmarks", "tests"]

#: The packages the sizes gate reads, and its limits.
SIZED = ["entitlements", "projections"]
MAX_FUNCTION_LINES = 80
MAX_COMPLEXITY = 15
MAX_CLASS_LINES = 300


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


def _functions(blocks: list[Function | Class]) -> Iterator[Function]:
    """Every function radon found: top-level, methods, closures, in classes within classes."""
    for b in blocks:
        if isinstance(b, Class):
            yield from _functions([*b.methods, *b.inner_classes])
        else:
            yield b
            yield from _functions(list(b.closures))


def offenders(path: Path) -> list[str]:
    """What in one file breaks the sizes gate, one line each, `file:line name: why`."""
    where = path.relative_to(ROOT)
    text = path.read_text()
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            is_class = isinstance(node, ast.ClassDef)
            if lines > (MAX_CLASS_LINES if is_class else MAX_FUNCTION_LINES):
                kind = "class " if is_class else ""
                found.append(f"{where}:{node.lineno} {kind}{node.name}: {lines} lines")
    # radon lists a method both on its own and in its class: each function once, by line
    for f in {f.lineno: f for f in _functions(cc_visit(text))}.values():
        if f.complexity > MAX_COMPLEXITY:
            name = f"{f.classname}.{f.name}" if f.classname else f.name
            found.append(f"{where}:{f.lineno} {name}: cyclomatic complexity {f.complexity}")
    return found


def test_no_function_or_class_is_too_long_or_too_branched() -> None:
    """Functions fit on a screen (<= 80 lines) and branch at most 15 ways (radon), classes
    stay under 300 lines; every offender is listed."""
    files = sorted(p for package in SIZED for p in (ROOT / package).rglob("*.py"))
    found = [line for path in files for line in offenders(path)]
    assert not found, "too long or too branched:\n" + "\n".join(found)
