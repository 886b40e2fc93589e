"""Imports run one way: doors -> engine -> {projections, domain, store}; projections ->
domain; the domain imports neither. Read from the source (every import, also those inside
functions), so a shortcut taken anywhere shows up here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: The domain: what users ask, what aggregates decide and record, what answers look like.
DOMAIN = {
    "entitlements.domain.rules",
    "entitlements.domain.commands",
    "entitlements.domain.decisions",
    "entitlements.domain.account",
    "entitlements.domain.region",
    "entitlements.domain.command_log",
    "entitlements.domain.events",
    "entitlements.domain.event_facts",
    "entitlements.domain.times",
}
#: The writer's and the doors' side: none of it is for a projection or the domain to use.
ENGINE_SIDE = {
    "entitlements.application.engine",
    "entitlements.application.command_book",
    "entitlements.application.aggregates",
    "entitlements.application.command_book_file",
    "entitlements.application.fan_out",
    "entitlements.application.group",
    "entitlements.application.group_commit",
    "entitlements.application.handlers",
    "entitlements.application.queries",
    "entitlements.application.retries",
    "entitlements.application.sealing",
    "entitlements.application.store_app",
    "entitlements.adapters.store",
    "entitlements.adapters.tokens",
    "entitlements.cli",
    "entitlements.http",
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


PROJECTIONS = sorted((ROOT / "projections").glob("*.py"))
DOMAIN_FILES = [ROOT / (m.replace(".", "/") + ".py") for m in sorted(DOMAIN)]


@pytest.mark.parametrize("path", PROJECTIONS, ids=module_name)
def test_a_projection_depends_on_the_domain_alone(path: Path) -> None:
    outside = {
        m
        for m in imports_of(path)
        if m.startswith("entitlements") and m not in DOMAIN and m != "entitlements"
    }
    # `from entitlements.domain.rules import Fact` names entitlements.domain.rules.Fact: keep modules only
    outside = {m for m in outside if m.rsplit(".", 1)[0] not in DOMAIN}
    assert not outside, f"{module_name(path)} imports {sorted(outside)}"


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=module_name)
def test_the_domain_imports_no_projection_and_nothing_of_the_engine(path: Path) -> None:
    wrong = {
        m
        for m in imports_of(path)
        if m.startswith("projections") or any(m == e or m.startswith(e + ".") for e in ENGINE_SIDE)
    }
    assert not wrong, f"{module_name(path)} imports {sorted(wrong)}"


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
