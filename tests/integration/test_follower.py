"""The supervised follower (projections/follower.py): store errors, a silent subscription, a
PostgreSQL restart and an outage never end the follow thread; the index catches up after
them, and the status says meanwhile since when it may be stale.

The writer and the follower are two engines of this process on one store: the follower
learns of the writer's commands only by following the log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError, PersistenceError

from entitlements import open_engine
from entitlements.adapters.store import StoreUnavailable
from entitlements.application.engine import Engine
from projections.follower import FollowStatus
from tests.conftest import ThrowawayPostgres, registrations

ACCOUNTS = ["acc-0", "acc-1", "acc-2"]


def register(engine: Engine) -> None:
    engine.apply(registrations(ACCOUNTS))


def revoke(account_id: str) -> dict[str, Any]:
    return {
        "command": "revoke_hosting",
        "account_id": account_id,
        "reason": f"test {time.time()}",
        "effective_at": "2020-01-02",
    }


def apply_when_up(engine: Engine, command: Mapping[str, Any], seconds: float) -> int:
    """Apply `command`, trying again while the store is unavailable (for `seconds` at most);
    returns the log position it reached."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            (result,) = engine.apply([command])
            assert result.status == "applied" and result.position is not None, result
            return result.position
        except (StoreUnavailable, PersistenceError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def follow_threads_alive() -> int:
    return sum(t.name == "entitlements-follow" and t.is_alive() for t in threading.enumerate())


def statuses(engine: Engine) -> list[FollowStatus]:
    """Every status the engine's follower announces from now on, in order."""
    seen: list[FollowStatus] = []
    engine.projector.on_status.append(seen.append)
    return seen


@pytest.fixture
def sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    return f"sqlite:///{tmp_path / 'store.db'}"


def fail_reads(engine: Engine, times: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The engine's next `times` reads of the log raise the store's OperationalError, as a
    store that went away does; returns the list of failures made so far."""
    recorder = engine.app.recorder
    real = recorder.select_notifications
    failed: list[str] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(failed) < times:
            failed.append("disk I/O error")
            raise OperationalError("disk I/O error\nsecond line")
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder, "select_notifications", flaky)
    return failed


def caught_up_and_following(follower: Engine, position: int, seen: list[FollowStatus]) -> bool:
    """The index holds `position` and on_status has told "following" last. A follower
    catches up first and says so after: in between, the index is ahead of what was told."""
    return follower.index.position >= position and bool(seen) and seen[-1].state == "following"


def test_a_follower_whose_reads_fail_follows_on_and_takes_what_was_recorded_meanwhile(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_engine(sqlite_url) as writer, open_engine(sqlite_url) as follower:
        register(writer)
        seen = statuses(follower)
        advanced: list[int] = []
        follower.projector.on_advance.append(advanced.append)
        follower.follow()
        assert follower.follower_status().state == "following"
        before = time.time()
        failed = fail_reads(follower, 3, monkeypatch)
        position = apply_when_up(writer, revoke("acc-0"), 0)
        assert wait_until(lambda: caught_up_and_following(follower, position, seen), 10), seen
        assert failed == ["disk I/O error"] * 3
        assert not follower.check("acc-0", "host").allowed
        assert follow_threads_alive() == 1
        assert [s.state for s in seen] == ["following", "reconnecting", "following"]
        _, lost, back = seen
        assert lost.stale_since is not None and before - 1 < lost.stale_since <= time.time()
        assert lost.last_error == "OperationalError: disk I/O error"  # one line
        assert lost.reconnects == 1 and lost.stale_for() > 0
        assert back.stale_since is None and back.stale_for() == 0.0
        assert back.last_error == lost.last_error and back.reconnects == 1
        assert back.last_contact >= lost.stale_since
        assert advanced[-1] == follower.index.position == follower.follower_status().position
        assert advanced == sorted(set(advanced))  # told each position once, in order


def test_follow_on_a_store_that_fails_now_starts_reconnecting_and_follows_once_it_answers(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_engine(sqlite_url) as writer, open_engine(sqlite_url) as follower:
        register(writer)
        assert follower.follower_status().state == "not-following"
        failed = fail_reads(follower, 4, monkeypatch)
        seen = statuses(follower)
        follower.follow()  # does not raise
        status = follower.follower_status()
        assert status.state == "reconnecting" and status.stale_since is not None
        position = apply_when_up(writer, revoke("acc-1"), 0)
        assert wait_until(lambda: caught_up_and_following(follower, position, seen), 10), seen
        assert len(failed) == 4
        assert [s.state for s in seen] == ["reconnecting", "following"]
    assert follower.follower_status().state == "stopped"
    assert follow_threads_alive() == 0


class SilentSubscription:
    """A LISTEN/NOTIFY subscription whose connection stopped delivering without an error:
    it yields nothing until stopped."""

    made = 0

    def __init__(self) -> None:
        self._stopped = threading.Event()
        SilentSubscription.made += 1

    def __enter__(self) -> SilentSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        self._stopped.wait()
        raise StopIteration

    def stop(self) -> None:
        self._stopped.set()


def test_a_subscription_that_stops_delivering_does_not_leave_the_index_behind(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_engine(sqlite_url) as writer, open_engine(sqlite_url) as follower:
        register(writer)
        SilentSubscription.made = 0

        def subscribe(gt: int | None = None, topics: Any = ()) -> SilentSubscription:
            return SilentSubscription()

        monkeypatch.setattr(follower.app.recorder, "subscribe", subscribe)
        follower.follow()
        position = apply_when_up(writer, revoke("acc-2"), 0)
        # Found within two heartbeats (1 s each), caught up, subscribed again.
        assert wait_until(lambda: follower.index.position >= position, 10)
        assert not follower.check("acc-2", "host").allowed
        assert SilentSubscription.made >= 2
        assert wait_until(lambda: follower.follower_status().state == "following", 5)
        status = follower.follower_status()
        assert status.reconnects >= 1 and status.stale_since is None
        assert status.last_error is not None
        assert "the subscription stopped delivering" in status.last_error


def test_on_advance_is_told_of_this_process_s_own_writes(sqlite_url: str) -> None:
    with open_engine(sqlite_url) as engine:
        advanced: list[int] = []
        engine.projector.on_advance.append(advanced.append)
        engine.follow()
        register(engine)  # taken by the writer itself, not read back by the follower
        position = engine.index.position
        assert wait_until(lambda: bool(advanced) and advanced[-1] == position, 5), advanced
        assert engine.follower_status().reconnects == 0


# -- PostgreSQL: a cluster of the test's own, restarted or stopped ------------------------


@pytest.mark.slow
@pytest.mark.timing
@pytest.mark.postgres
def test_a_follower_follows_on_after_a_postgresql_restart(
    throwaway_postgres: ThrowawayPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarts a cluster of the test's own, never the machine's server."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    url = throwaway_postgres.url
    with open_engine(url) as writer, open_engine(url) as follower:
        register(writer)
        seen = statuses(follower)
        follower.follow()
        first = apply_when_up(writer, revoke("acc-0"), 0)
        assert wait_until(lambda: follower.index.position >= first, 10)
        throwaway_postgres.restart()
        position = apply_when_up(writer, revoke("acc-1"), 30)
        # The command made after the restart reaches the follower's index within 10 s.
        assert wait_until(lambda: follower.index.position >= position, 10), seen
        assert not follower.check("acc-1", "host").allowed
        assert follow_threads_alive() == 1
        assert wait_until(lambda: caught_up_and_following(follower, position, seen), 10), seen
        states = [s.state for s in seen]
        assert "reconnecting" in states and states[-1] == "following", seen
        status = follower.follower_status()
        assert status.reconnects >= 1 and status.stale_since is None
        assert status.last_error is not None and "\n" not in status.last_error


@pytest.mark.slow
@pytest.mark.timing
@pytest.mark.postgres
def test_a_follower_answers_from_memory_through_an_outage_and_catches_up_after_it(
    throwaway_postgres: ThrowawayPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stops a cluster of the test's own for about 8 s, then starts it again."""
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))
    url = throwaway_postgres.url
    with open_engine(url) as writer, open_engine(url) as follower:
        register(writer)
        follower.follow()
        first = apply_when_up(writer, revoke("acc-0"), 0)
        assert wait_until(lambda: follower.index.position >= first, 10)
        throwaway_postgres.stop()
        down_at = time.time()
        assert wait_until(lambda: follower.follower_status().state == "reconnecting", 5)
        status = follower.follower_status()
        assert status.stale_since is not None and status.stale_since <= down_at
        assert status.last_error is not None and "\n" not in status.last_error
        assert not follower.check("acc-0", "host").allowed  # answered from memory
        assert follower.check("acc-1", "host").allowed
        time.sleep(max(0.0, down_at + 8 - time.time()))
        status = follower.follower_status()
        assert status.state == "reconnecting" and status.stale_for() >= 8
        assert follow_threads_alive() == 1
        throwaway_postgres.start_again()
        position = apply_when_up(writer, revoke("acc-1"), 30)
        assert wait_until(lambda: follower.index.position >= position, 15)
        assert not follower.check("acc-1", "host").allowed
        assert wait_until(lambda: follower.follower_status().state == "following", 10)
        assert follower.follower_status().stale_since is None
