"""Benchmarks share one synthetic world per session; $BENCH_ACCOUNTS sets its size."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.synthetic import ACCOUNTS, world_facts, world_index
from entitlements.application.engine import Engine
from tests.conftest import postgres_url  # noqa: F401 - the PostgreSQL fixture, shared


@pytest.hookimpl(tryfirst=True)  # before xdist starts its workers
def pytest_configure(config: pytest.Config) -> None:
    """Timed benchmarks (`--benchmark-enable`) run in this one process, whatever `-n` the
    suite's addopts say: pytest-benchmark does not time under xdist, and a second worker
    would share the cores with what is being timed."""
    if config.getoption("benchmark_enable", False) and not os.environ.get("PYTEST_XDIST_WORKER"):
        config.option.numprocesses = 0
        config.option.dist = "no"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, list[str]]]:
    """An engine whose index holds ACCOUNTS synthetic accounts, and their ids shuffled."""
    facts = world_facts(ACCOUNTS)
    index = world_index(facts)
    path: Path = tmp_path_factory.mktemp("bench") / "bench.db"
    engine = Engine(f"sqlite:///{path}", start=False)
    engine.projector.facts = facts
    engine.index.replace(index.accounts, index.regions, facts.position)
    engine.index.cache_size = 2 * ACCOUNTS + 1024
    ids = list(facts.accounts)
    random.Random(7).shuffle(ids)
    yield engine, ids
    engine.app.close()
