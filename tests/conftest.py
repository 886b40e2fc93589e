"""Shared fixtures: a fresh store per test, and the china-2020 scenario files."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from entitlements import open_engine
from entitlements.engine import Engine

#: The installed console script, beside this interpreter (CI does not put the venv on PATH).
CLI = str(Path(sys.executable).with_name("entitlements"))

SCENARIOS = Path(__file__).resolve().parents[1] / "entitlements" / "scenarios"
SHARED_SCENARIOS = Path(__file__).resolve().parents[2] / "shared" / "scenarios"


def scenario_file(name: str) -> Path:
    """The shared scenario file when the shared folder is beside the repo, else our copy."""
    shared = SHARED_SCENARIOS / name
    return shared if shared.exists() else SCENARIOS / name


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


PG_SERVER = os.environ.get("ENTITLEMENTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
PG_DATABASE = "entitlements_test"


def postgres_available() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can (creating the test database)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone():
                conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    except psycopg.OperationalError as e:
        return f"no PostgreSQL server at {PG_SERVER}: {str(e).splitlines()[0]}"
    return None


def fresh_postgres_schema() -> str:
    """Empty the test database's public schema; returns the store URL."""
    import psycopg

    url = f"{PG_SERVER}/{PG_DATABASE}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh store of each kind: an SQLite file, and a PostgreSQL schema emptied for the
    test. Without a server the PostgreSQL half skips, saying why, except under CI=true."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))  # index snapshots
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'entitlements.db'}"
    return postgres_or_skip()


@pytest.fixture
def postgres_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh PostgreSQL store only (for tests of PostgreSQL itself)."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    return postgres_or_skip()


def postgres_or_skip() -> str:
    """A fresh PostgreSQL schema's URL; skip saying why without a server (fail under CI)."""
    why_not = postgres_available()
    if why_not:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {why_not}")
        pytest.skip(why_not)
    return fresh_postgres_schema()


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    with open_engine(store_url) as e:
        yield e
