"""Every module imports on its own, in an interpreter that has imported nothing of ours (no
import cycle hidden by the order in which entry points happen to import things).

A fresh interpreter per module spends most of a second importing the libraries (the
eventsourcing library, SQLAlchemy, pydantic, FastAPI, ...) before it reaches our module. So
one interpreter imports those libraries once, and forks a child per module: the child starts
with the libraries loaded and none of our modules, and imports the one module under test.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("entitlements", "projections")
FILES = sorted(p for package in OURS for p in (ROOT / package).rglob("*.py"))
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in FILES
)

#: The forking interpreter: imports the libraries it is given (each one it can), then for
#: every module name on stdin forks a child that imports it and prints one JSON line,
#: [module, null] or [module, "the error's last line"].
FORKER = """
import importlib, json, os, sys, traceback
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not any(m.split(".")[0] in ("entitlements", "projections") for m in sys.modules)
for line in sys.stdin:
    module = line.strip()
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
            error = None
        except BaseException:
            error = traceback.format_exc().strip().splitlines()[-1]
        print(json.dumps([module, error]), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def libraries() -> list[str]:
    """Every module outside our packages that one of our modules imports by name."""
    found: set[str] = set()
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return sorted(name for name in found if name.split(".")[0] not in OURS)


@pytest.fixture(scope="module")
def forker() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", FORKER, json.dumps(libraries())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=60)


@pytest.mark.parametrize("module", MODULES)
def test_the_module_imports_on_its_own(module: str, forker: subprocess.Popen[str]) -> None:
    assert forker.stdin is not None and forker.stdout is not None
    forker.stdin.write(module + "\n")
    forker.stdin.flush()
    answered, error = json.loads(forker.stdout.readline())
    assert answered == module
    assert error is None, error


def test_a_module_that_cannot_import_is_reported(forker: subprocess.Popen[str]) -> None:
    """The forker is not a test that cannot fail: a missing module comes back as its error."""
    assert forker.stdin is not None and forker.stdout is not None
    forker.stdin.write("entitlements.no_such_module\n")
    forker.stdin.flush()
    answered, error = json.loads(forker.stdout.readline())
    assert answered == "entitlements.no_such_module"
    assert error == "ModuleNotFoundError: No module named 'entitlements.no_such_module'"


def test_the_package_names_the_public_api() -> None:
    import entitlements

    assert entitlements.open_engine.__module__ == "entitlements.application.engine"
    assert {"Engine", "open_engine", "UnknownAccount", "MalformedCommand"} <= set(
        entitlements.__all__
    )
    assert set(entitlements.__all__) == set(entitlements._HOME)  # every public name has a home
