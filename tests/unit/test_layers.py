"""Imports run one way, by folder: the doors (entitlements/cli, which starts
entitlements/http) -> entitlements/application -> {projections, entitlements/adapters}
-> entitlements/domain. Read from the source (every import, also those inside functions),
so a shortcut taken anywhere shows up here, and a new module is held by its folder's rule
without being listed. (import-linter holds the same layers: pyproject.toml.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Each layer's folder and what it may import (besides itself and the package roots).
MAY_IMPORT = {
    "entitlements.cli": {
        "entitlements.http",
        "entitlements.application",
        "entitlements.adapters",
        "entitlements.domain",
    },
    "entitlements.http": {
        "entitlements.application",
        "entitlements.adapters",
        "entitlements.domain",
    },
    "entitlements.application": {"projections", "entitlements.adapters", "entitlements.domain"},
    # the meeting service's local copy: the projections' index, the chain's pure parts;
    # which modules of these it may not reach is pyproject.toml's third contract, and
    # test_the_client_loads_nothing_of_the_store below
    "entitlements.client": {"projections", "entitlements.adapters", "entitlements.domain"},
    "projections": {"entitlements.domain"},
    "entitlements.adapters": {"entitlements.domain"},
    "entitlements.domain": set(),
}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports from our two packages, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in ("entitlements", "projections"))
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def layer_of(module: str) -> str | None:
    """The layer a module is in (None: a package root, `entitlements` itself)."""
    return next(
        (layer for layer in MAY_IMPORT if module == layer or module.startswith(layer + ".")), None
    )


LAYERED = sorted(p for layer in MAY_IMPORT for p in (ROOT / layer.replace(".", "/")).rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    loose = sorted(
        module_name(p)
        for p in (ROOT / "entitlements").glob("*.py")
        if p.name not in ("__init__.py",)
    )
    assert loose == [], f"modules outside a layer's folder: {loose}"


@pytest.mark.parametrize("path", LAYERED, ids=module_name)
def test_a_module_imports_only_its_own_layer_and_those_below(path: Path) -> None:
    own = layer_of(module_name(path))
    assert own is not None
    allowed = MAY_IMPORT[own] | {own}
    wrong = sorted(
        m for m in imports_of(path) if (layer := layer_of(m)) is not None and layer not in allowed
    )
    assert not wrong, f"{module_name(path)} ({own}) imports {wrong}"


#: The doors: the command line and the HTTP API. They reach the log and the read models
#: only through the application (its engine's methods and its modules' functions).
DOORS = sorted(
    [*(ROOT / "entitlements/cli").rglob("*.py"), *(ROOT / "entitlements/http").rglob("*.py")]
)


def reaches_for_app(path: Path) -> list[int]:
    """Lines where a file reads `<something>.app` off an engine-like name (the library's
    Application behind the engine); `request.app` (Starlette's) is not the engine's."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "app":
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id == "request"):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", DOORS, ids=module_name)
def test_a_door_imports_no_projection(path: Path) -> None:
    wrong = sorted(m for m in imports_of(path) if m.split(".")[0] == "projections")
    assert not wrong, f"{module_name(path)} imports {wrong}: ask the application instead"


@pytest.mark.parametrize("path", DOORS, ids=module_name)
def test_a_door_does_not_reach_around_the_application(path: Path) -> None:
    lines = reaches_for_app(path)
    assert not lines, f"{module_name(path)} reads the engine's `.app` at lines {lines}"


def test_the_client_loads_nothing_of_the_store() -> None:
    """`import entitlements.client` in a fresh process: no database driver, no recorder, no
    module of ours that reads or writes the store (issue 19: no database credentials)."""
    import subprocess
    import sys

    code = "import sys, entitlements.client; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    store = ("sqlalchemy", "psycopg", "sqlite3", "eventsourcing.sqlite", "eventsourcing.postgres")
    ours = ("entitlements.application", "entitlements.adapters.store", "projections.projector")
    wrong = [m for m in loaded if m.startswith(store + ours)]
    assert wrong == [], f"importing entitlements.client loads {wrong}"
