"""Reliability with real processes, bounded in time, loopback only: concurrent writers,
a follower killed mid catch-up, the database restarted under load, an interrupted fan-out."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from benchmarks.synthetic import RULE_AT, START, fill_store, region_opened, registration_events
from entitlements import open_engine
from entitlements.application import fan_out as fan_out_module
from entitlements.application.engine import Engine
from entitlements.application.sealing import Saver
from entitlements.domain.rules import hosting_corrections
from projections.rebuild import rebuild
from projections.sql_views import SqlReadModel, sql_engine
from tests.conftest import CLI, ThrowawayPostgres, registrations
from tests.integration.test_read_models import all_rows

ACCOUNTS = [f"acc-{i}" for i in range(3)]


def hammer(
    url: str,
    name: str,
    seconds: float,
    start: mp.synchronize.Event,
    ready: mp.Queue[Any],
    out: mp.Queue[Any],
) -> None:
    """Revoke or restore hosting on random shared accounts, each with a unique reason;
    report what was acknowledged, and every error as it was shown. The engine is open
    before the clock starts (on a loaded machine, opening can take longer than the wait
    before a restart)."""
    acks: list[tuple[str, str, str]] = []
    errors: list[str] = []
    try:
        with open_engine(url) as engine:
            ready.put(name)
            start.wait(60)
            deadline, i = time.monotonic() + seconds, 0
            while time.monotonic() < deadline:
                account, reason = random.choice(ACCOUNTS), f"{name}-{i}"
                command = random.choice(("revoke_hosting", "restore_hosting"))
                i += 1
                try:
                    (r,) = engine.apply(
                        [
                            {
                                "command": command,
                                "account_id": account,
                                "reason": reason,
                                "effective_at": "2020-01-02",
                            }
                        ]
                    )
                    acks.append((account, reason, r.status))
                except Exception as e:  # noqa: BLE001 - the test reports what a client saw
                    errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.2)
    finally:
        out.put((acks, errors))


def run_writers(
    url: str, n: int, seconds: float, during: Callable[[], None] | None = None
) -> tuple[list[Any], list[str]]:
    ctx = mp.get_context("spawn")
    start, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=hammer, args=(url, f"w{i}", seconds, start, ready, out))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    start.set()
    if during:
        during()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    return [a for acks, _ in results for a in acks], [e for _, errs in results for e in errs]


def assert_every_acknowledged_event_exactly_once(engine: Engine, acks: list[Any]) -> None:
    engine.catch_up()
    for account in ACCOUNTS:
        history = engine.history(account)
        assert [e["version"] for e in history] == list(range(1, len(history) + 1))
        recorded = Counter(
            e["reason"] for e in history if e["type"].startswith("Hosting") and not e["cause"]
        )
        applied = {reason for a, reason, status in acks if a == account and status == "applied"}
        assert set(recorded) == applied  # nothing lost, nothing unacknowledged
        assert all(count == 1 for count in recorded.values())  # nothing twice
        clocks = [e["recorded_at"] for e in history]
        assert clocks == sorted(clocks)


def register_shared_accounts(engine: Engine) -> None:
    engine.apply(registrations(ACCOUNTS))


@pytest.mark.slow
@pytest.mark.timing
def test_writer_processes_on_overlapping_accounts_lose_nothing(
    store_url: str, engine: Engine
) -> None:
    register_shared_accounts(engine)
    acks, errors = run_writers(store_url, n=4, seconds=2.0)
    assert errors == []
    assert sum(status == "applied" for *_, status in acks) > 20
    assert_every_acknowledged_event_exactly_once(engine, acks)


@pytest.mark.slow
@pytest.mark.timing
@pytest.mark.postgres
def test_a_database_restart_under_write_load_loses_nothing_acknowledged(
    throwaway_postgres: ThrowawayPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarts a cluster of the test's own, never the machine's server."""
    store_url = throwaway_postgres.url
    monkeypatch.setenv("ENTITLEMENTS_CACHE", str(tmp_path / "cache"))  # index snapshots
    with open_engine(store_url) as engine:
        register_shared_accounts(engine)

    def restart() -> None:
        time.sleep(1.5)
        throwaway_postgres.restart()

    started = _server_started_at(store_url)
    acks, errors = run_writers(store_url, n=2, seconds=7.0, during=restart)
    assert _server_started_at(store_url) > started, "the server was not restarted"
    # A command in flight when the server went down fails with a one-line error naming the
    # store problem; later ones reconnect (pooled connections are pinged before use).
    assert all(
        "\n" not in e and e.startswith("StoreUnavailable: the store is unavailable: ")
        for e in errors
    ), errors
    assert sum(status == "applied" for *_, status in acks) > 10  # they reconnected and went on
    with open_engine(store_url) as fresh:
        assert_every_acknowledged_event_exactly_once(fresh, acks)


def _server_started_at(url: str) -> Any:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        assert row is not None
        return row[0]


def big_store(engine: Engine, accounts: int) -> None:
    fill_store(engine.app, iter([region_opened("CN", START)]))
    fill_store(engine.app, registration_events(accounts))
    engine.catch_up()
    engine.apply(
        [
            {
                "command": "apply_region_rule",
                "region": "CN",
                "rule": "free_hosting_suspended",
                "effective_at": RULE_AT.isoformat(),
            }
        ]
    )


@pytest.mark.slow
@pytest.mark.timing
def test_a_follower_killed_mid_catch_up_ends_with_what_a_rebuild_gives(
    store_url: str, engine: Engine
) -> None:
    big_store(engine, 3000)
    target = engine.position()
    env = {**os.environ, "ENTITLEMENTS_DB": store_url, "ENTITLEMENTS_PROJECTION_BATCH": "150"}
    follower = subprocess.Popen(
        [CLI, "catch-up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    model = SqlReadModel(sql_engine(store_url))
    deadline = time.monotonic() + 60
    position = 0
    while time.monotonic() < deadline and follower.poll() is None:
        try:
            position = model.position()
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            position = 0
        if position > 0:
            break
        time.sleep(0.005)
    follower.send_signal(signal.SIGKILL)
    follower.wait(10)
    killed_at = model.position()
    assert 0 < killed_at < target, f"killed at {killed_at} of {target}: not halfway"
    restarted = subprocess.run(
        [CLI, "catch-up"], env=env, capture_output=True, text=True, timeout=300
    )
    assert restarted.returncode == 0, restarted.stderr
    assert model.position() == target
    after_restart = all_rows(store_url)
    rebuild(engine.app, store_url)
    assert all_rows(store_url) == after_restart


def interrupt_a_fan_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[int]]:
    """50 free CN accounts; the free-hosting rule's fan-out dies after two batches of 10."""
    fill_store(engine.app, iter([region_opened("CN", START)]))
    fill_store(engine.app, registration_events(50))
    engine.catch_up()
    monkeypatch.setattr(fan_out_module, "FAN_OUT_BATCH", 10)
    real_save, saves = Saver.save_events, cast(list[int], [])

    def crash_on_third_batch(self: Saver, events: list[Any]) -> int | None:
        if len(saves) == 2:
            raise RuntimeError("the process died here")
        saves.append(len(events))
        return real_save(self, events)

    command = {
        "command": "apply_region_rule",
        "region": "CN",
        "rule": "free_hosting_suspended",
        "effective_at": RULE_AT.isoformat(),
        "command_id": "rule-1",
        "actor": "ops",
    }
    monkeypatch.setattr(Saver, "save_events", crash_on_third_batch)
    with pytest.raises(RuntimeError):
        engine.apply([command])
    monkeypatch.setattr(Saver, "save_events", real_save)
    return command, saves


def hosting_at_rule(engine: Engine) -> list[bool]:
    return [engine.check(a, "host", at=RULE_AT).allowed for a in sorted(engine.facts.accounts)]


def test_an_interrupted_fan_out_leaves_no_account_half_done_and_the_next_writer_finishes_it(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, saves = interrupt_a_fan_out(engine, monkeypatch)
    with open_engine(store_url) as restarted:
        region = restarted.facts.region_facts("CN")
        done = [
            a
            for a, facts in restarted.facts.accounts.items()
            if not hosting_corrections(facts, region, RULE_AT)
        ]
        assert len(done) == 20 and sum(saves) == 20  # two whole batches, nothing partial
        assert hosting_at_rule(restarted).count(True) == 30  # not yet: nobody has written since
        # Any writer finishes it first, before its own command (here: one in another region).
        (other,) = restarted.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "us-1",
                    "region": "US",
                    "plan": "pro",
                    "channel": "online",
                    "effective_at": "2020-06-01",
                }
            ]
        )
        assert other.status == "applied"
        assert not any(hosting_at_rule(restarted)[:50])
        finished = [
            e
            for e in restarted.history(sorted(done)[0]) + restarted.history("acct-0000049")
            if e["type"] == "HostingRevoked"
        ]
        assert {(e["actor"], e["command_id"]) for e in finished} == {("ops", "rule-1")}
        assert restarted.reconcile() == 0  # nothing left to do
        # The command itself is on file: sent again, it is its original result, not "in force".
        (again,) = restarted.apply([command])
        assert (again.status, again.duplicate) == ("applied", True)


def test_sending_an_interrupted_rule_command_again_finishes_its_fan_out(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    command, _ = interrupt_a_fan_out(engine, monkeypatch)
    with open_engine(store_url) as restarted:
        (again,) = restarted.apply([command])
        assert (again.status, again.reason, again.duplicate) == ("applied", None, True)
        assert not any(hosting_at_rule(restarted))
        assert again.position == restarted.position()  # the fan-out's end: where it was complete
        assert restarted.reconcile() == 0


@pytest.mark.postgres
def test_the_store_itself_refuses_a_recorded_at_that_goes_back(postgres_url: str) -> None:
    """Even a write that bypasses the writer lock (a save retried across a server restart)
    cannot move the store's clock backwards."""
    from eventsourcing.persistence import IntegrityError

    with open_engine(postgres_url) as engine:
        engine.apply(
            [
                {
                    "command": "authorize_partner",
                    "region": "CN",
                    "partner": "P",
                    "effective_at": "2020-01-01",
                    "recorded_at": "2021-01-01",
                }
            ]
        )
        with pytest.raises(IntegrityError, match="earlier than the newest"):
            fill_store(engine.app, registration_events(1))  # recorded_at 2020-01-01
        (late,) = engine.apply(
            [
                {
                    "command": "register_account",
                    "account_id": "a",
                    "region": "US",
                    "plan": "pro",
                    "channel": "online",
                    "effective_at": "2020-01-01",
                }
            ]
        )
        assert late.status == "applied"  # stamped now: after the newest


def test_a_commit_whose_acknowledgement_was_lost_is_reported_applied_once(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server commits, the connection drops before the client hears it, the recorder
    retries and meets its own rows: the command was applied, exactly once."""
    from eventsourcing.persistence import IntegrityError

    register_shared_accounts(engine)
    real_save, calls = engine.app.save, []

    def commit_then_lose_the_ack(*objs: Any, **kwargs: Any) -> Any:
        calls.append(1)
        real_save(*objs, **kwargs)
        raise IntegrityError("duplicate key value violates unique constraint (the retried insert)")

    monkeypatch.setattr(engine.app, "save", commit_then_lose_the_ack)
    (result,) = engine.apply(
        [
            {
                "command": "revoke_hosting",
                "account_id": "acc-0",
                "reason": "once",
                "effective_at": "2020-01-02",
            }
        ]
    )
    assert (result.status, len(calls)) == ("applied", 1)
    assert [e["reason"] for e in engine.history("acc-0") if e["type"] == "HostingRevoked"] == [
        "once"
    ]
