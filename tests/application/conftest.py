"""The application tier: the engine's service API (apply, check, capabilities, history,
rejections, changes, the auditors' questions) driven on `memory://`, eventsourcing's POPO
recorder, with no file and no server. What the rules and rejection reasons decide does not
depend on the store: these tests prove the rules; the database's own behaviour (the scenario
row by row, concurrency, exactly once across processes, crash and restart) is proven on
SQLite and PostgreSQL in tests/integration and tests/e2e, and test_memory_store.py checks
that memory:// answers the china-2020 scenario as SQLite does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from entitlements import open_engine
from entitlements.application.engine import Engine


@pytest.fixture
def engine() -> Iterator[Engine]:
    """A fresh in-memory store (its log ends with the engine)."""
    with open_engine("memory://") as e:
        yield e
