"""Every module imports on its own, in a fresh interpreter (no import cycle hidden by the
order in which entry points happen to import things)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for package in ("entitlements", "projections")
    for p in (ROOT / package).rglob("*.py")
)


@pytest.mark.parametrize("module", MODULES)
def test_the_module_imports_on_its_own(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]


def test_the_package_names_the_public_api() -> None:
    import entitlements

    assert entitlements.open_engine.__module__ == "entitlements.application.engine"
    assert {"Engine", "open_engine", "UnknownAccount", "MalformedCommand"} <= set(
        entitlements.__all__
    )
    assert set(entitlements.__all__) == set(entitlements._HOME)  # every public name has a home
