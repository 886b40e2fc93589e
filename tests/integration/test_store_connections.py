"""What opening a PostgreSQL store costs the server: two connections (each a server process,
about 5 ms of its CPU to start), and the writer lock keeps its timeout on the one it adopts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from entitlements import open_engine
from entitlements.adapters.store import WriterLock, first_session
from tests.conftest import PG_SERVER, postgres_or_skip, postgres_template

pytestmark = pytest.mark.postgres


def others_connected(url: str) -> int:
    """Connections to the store's database, other than the one asking."""
    with psycopg.connect(url) as probe:
        (n,) = probe.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone() or (0,)
    return int(n)


def test_an_open_store_holds_two_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one that checked the server, now the writer lock's session, and the pool's first
    (there were seven: the pool's five, a sixth its first use raced, the lock's own). On a
    database of its own: an earlier test's engine, not yet collected, may still hold a
    connection to the worker's."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))  # index snapshots
    postgres_or_skip()
    url = f"{PG_SERVER}/{postgres_template(lambda url: None)}"
    assert others_connected(url) == 0
    with open_engine(url) as engine:
        engine.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "a",
                    "region": "CN",
                    "plan": "free",
                    "channel": "online",
                    "effective_at": "2020-01-01",
                }
            ]
        )
        assert engine.check("a", "host").allowed
        assert others_connected(url) == 2
    assert others_connected(url) == 0


def test_the_lock_on_an_adopted_session_waits_at_most_its_timeout(postgres_url: str) -> None:
    held = WriterLock(postgres_url, timeout=5, session=first_session(postgres_url, False))
    waiting = WriterLock(postgres_url, timeout=0.3, session=first_session(postgres_url, False))
    failed: list[BaseException] = []

    def take() -> None:
        try:
            with waiting:
                pass
        except Exception as e:  # noqa: BLE001 - the test reads it
            failed.append(e)

    try:
        with held:
            started = time.monotonic()
            taker = threading.Thread(target=take)
            taker.start()
            taker.join(timeout=20)
            assert not taker.is_alive(), "the lock waited past its timeout"
        assert failed, "the lock was taken while another session held it"
        assert time.monotonic() - started < 10
    finally:
        held.close()
        waiting.close()
