"""Shared fixtures: a fresh store per test, and the china-2020 scenario files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from entitlements import open_engine
from entitlements.engine import Engine

SCENARIOS = Path(__file__).resolve().parents[1] / "entitlements" / "scenarios"
SHARED_SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"


def scenario_file(name: str) -> Path:
    """The shared scenario file when the shared folder is beside the repo, else our copy."""
    shared = SHARED_SCENARIOS / name
    return shared if shared.exists() else SCENARIOS / name


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'entitlements.db'}"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    with open_engine(store_url) as e:
        yield e
