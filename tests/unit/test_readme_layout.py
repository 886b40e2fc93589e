"""README's "How it is built" names every module of the two packages, so the picture and its
tables cannot fall behind the folders: a module added, moved or renamed fails here until
the README says where it is and what it holds."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def how_it_is_built() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## How it is built\n")
    return text[start : text.index("\n## ", start + 1)]


def test_every_module_is_named_in_how_it_is_built() -> None:
    section = how_it_is_built()
    named = set(re.findall(r"[\w/]*?(\w+\.py)", section))
    missing = [
        str(path.relative_to(ROOT))
        for package in ("entitlements", "projections")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py") and path.name not in named
    ]
    assert not missing, f"README's 'How it is built' does not name: {missing}"


def test_every_folder_of_a_layer_is_drawn() -> None:
    section = how_it_is_built()
    folders = ["entitlements/cli/", "entitlements/http/", "entitlements/application/"]
    folders += ["entitlements/adapters/", "entitlements/domain/", "projections/"]
    assert [f for f in folders if f not in section] == []
