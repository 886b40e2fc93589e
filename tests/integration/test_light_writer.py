"""A writer decides from the compact check index (a LightLog), never from a Fact per account:
it must decide exactly as a writer that keeps every account's facts in memory (LogFacts),
whether it started from a snapshot or read the whole log.

For random command sequences (test_equivalence's), the first part is applied, then the rest
by three writers on three stores holding the same first part:

  FULL      the writer that applied the first part, its facts then built in full (LogFacts:
            the way every writer decided before);
  SNAPSHOT  a fresh process started from the index snapshot saved after the first part;
  LOG       a fresh process that read the whole log (no snapshot), encoding as it goes.

Their logs (every event, command records included), results, histories and rejection logs
are equal, and each light writer's account facts, read back from its index, are the store's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.domain.decisions import CommandResult, UnknownAccount
from projections import light_log
from projections.check_index import code_of
from projections.facts import Changed, LogFacts
from projections.light_log import LightLog
from projections.projector import snapshot_path
from tests.conftest import fresh_postgres_schema
from tests.integration.test_equivalence import ACCOUNT_POOL, REGIONS, STORY, scenarios

NOT_COMPARED = ("timestamp", "chain")  # made at save time: differ from store to store


def log_of(engine: Engine) -> list[tuple[str, int, dict[str, Any]]]:
    """Every event of the store in log order: topic, version and what it says."""
    found = []
    for n in engine.app.recorder.select_notifications(start=1, limit=1_000_000):
        e = engine.app.mapper.to_domain_event(n)
        state = {k: v for k, v in vars(e).items() if k not in NOT_COMPARED}
        found.append((n.topic, n.originator_version, state))
    return found


def histories(engine: Engine) -> dict[str, list[dict[str, Any]] | None]:
    found: dict[str, list[dict[str, Any]] | None] = {}
    for account_id in ACCOUNT_POOL:
        try:
            found[account_id] = engine.history(account_id)
        except UnknownAccount:
            found[account_id] = None
    return found


def outcome(results: list[CommandResult]) -> list[tuple[str, str | None, bool]]:
    return [(r.status, r.reason, r.duplicate) for r in results]


def rejections(engine: Engine) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "position"} for r in engine.rejections()]


def assert_light_and_level(engine: Engine) -> None:
    """No Fact per account kept, and what the index gives back is what the store holds."""
    log = engine.projector.log
    assert isinstance(log, LightLog)
    for account_id, history in histories(engine).items():
        facts = sorted(log.account_facts(account_id), key=lambda f: f.version)
        assert [f.as_dict() for f in facts] == (history or [])
        registered = history[0]["region"] if history else None
        assert log.account_region(account_id) == registered
    for code in REGIONS:
        assert log.region_facts(code) == engine.facts.region_facts(code)


def _identified(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each command under an id of its own, the same on every store (ids name records)."""
    return [{**cmd, "command_id": f"cmd-{i}"} for i, cmd in enumerate(commands)]


def _forget_snapshots(url: str) -> None:
    index = snapshot_path(url)
    for path in (index, index.with_suffix(".commands")):
        path.unlink(missing_ok=True)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    commands=scenarios(),
    cut=st.floats(0, 1),
    one_by_one=st.booleans(),
    compact_every=st.sampled_from([1, 3, light_log.COMPACT_EVERY]),
)
@example(commands=STORY, cut=0.5, one_by_one=False, compact_every=1)
def test_a_light_writer_decides_as_one_that_keeps_every_fact(
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    commands: list[dict[str, Any]],
    cut: float,
    one_by_one: bool,
    compact_every: int,
) -> None:
    monkeypatch.setattr(light_log, "COMPACT_EVERY", compact_every)
    commands = _identified(commands)
    first, rest = commands[: int(len(commands) * cut)], commands[int(len(commands) * cut) :]
    with tempfile.TemporaryDirectory(prefix="light-writer-") as tmp:
        # The store under test is of the fixture's kind (the snapshot start); the others
        # are SQLite files.
        if store_url.startswith("sqlite"):
            snapshot_url = f"sqlite:///{Path(tmp) / 'snapshot.db'}"
        else:
            snapshot_url = fresh_postgres_schema()
            _forget_snapshots(snapshot_url)
        full_url = f"sqlite:///{Path(tmp) / 'full.db'}"
        log_url = f"sqlite:///{Path(tmp) / 'log.db'}"

        def apply(engine: Engine) -> list[CommandResult]:
            if one_by_one:
                return [r for cmd in rest for r in engine.apply([cmd])]
            return engine.apply(rest)

        for url in (snapshot_url, full_url, log_url):
            with open_engine(url) as engine:
                engine.apply(first)
                if url == snapshot_url:
                    engine.projector.save_snapshot()
        with open_engine(full_url) as full:
            assert isinstance(full.projector.facts, LogFacts)  # from now on: every Fact
            expected = outcome(apply(full))
            expected_log, expected_histories = log_of(full), histories(full)
            expected_rejections = rejections(full)
        for url in (snapshot_url, log_url):
            with open_engine(url) as light:
                started_from = light.projector._snapshot_position
                assert (started_from > 0) == (url == snapshot_url and len(first) > 0)
                assert outcome(apply(light)) == expected
                assert log_of(light) == expected_log
                assert histories(light) == expected_histories
                assert rejections(light) == expected_rejections
                assert_light_and_level(light)
            with open_engine(url) as again:  # its start from the log it wrote (or a snapshot)
                assert_light_and_level(again)
                assert histories(again) == expected_histories


def _register(account_id: str, region: str, plan: str) -> dict[str, Any]:
    return {
        "command": "register_account",
        "account_id": account_id,
        "region": region,
        "plan": plan,
        "channel": "online",
        "effective_at": "2020-02-01",
    }


def _spy_on_store_asks(engine: Engine) -> list[Any]:
    """The aggregate ids the engine's light log asks the store about, from now on."""
    log = engine.projector.log
    assert isinstance(log, LightLog)
    asked: list[Any] = []
    ask = log._resolve

    def spied(aggregate_id: Any) -> tuple[str, str] | None:
        asked.append(aggregate_id)
        return ask(aggregate_id)

    log._resolve = spied
    return asked


def test_a_follower_names_every_account_once_many_of_the_snapshot_move(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(light_log, "ASKED_AT_MOST", 2)
    accounts = [f"us-{i}" for i in range(6)]
    with open_engine(store_url) as writer:
        writer.apply([_register(a, "US", "pro") for a in accounts])
        writer.projector.save_snapshot()
        with open_engine(store_url) as reader:
            asked = _spy_on_store_asks(reader)
            revoke = {"command": "revoke_hosting", "reason": "audit", "effective_at": "2020-03-01"}
            results = writer.apply([{**revoke, "account_id": a} for a in accounts])
            assert [r.status for r in results] == ["applied"] * len(accounts)
            reader.catch_up()
            assert len(asked) == 2  # then every account named at once: no more store reads
            for a in accounts:
                assert reader.check(a, "host").allowed is False
                assert reader.check(a, "host", at="2020-02-15").allowed is True


def test_a_writer_from_a_snapshot_fans_out_without_asking_the_store(store_url: str) -> None:
    accounts = [f"cn-{i}" for i in range(5)]
    with open_engine(store_url) as first:
        first.apply([_register(a, "CN", "free") for a in accounts])
        first.projector.save_snapshot()
    with open_engine(store_url) as writer:
        assert writer.projector._snapshot_position > 0
        asked = _spy_on_store_asks(writer)
        rule = {
            "command": "apply_region_rule",
            "region": "CN",
            "rule": "free_hosting_suspended",
            "effective_at": "2020-05-19",
        }
        (result,) = writer.apply([rule])
        assert result.status == "applied", result.reason
        assert asked == []  # the fan-out named each account it wrote to
        assert_light_and_level(writer)
        for a in accounts:
            assert [h["type"] for h in writer.history(a)] == ["AccountRegistered", "HostingRevoked"]
            assert writer.check(a, "host", at="2020-05-20").allowed is False


def test_facts_a_writer_read_are_taken_back_only_while_the_account_is_unchanged(
    store_url: str,
) -> None:
    with open_engine(store_url) as writer, open_engine(store_url) as other:
        writer.apply([_register("us-1", "US", "pro"), _register("us-2", "US", "pro")])
        other.catch_up()
        log = writer.projector.log
        assert isinstance(log, LightLog)
        revoke = {"command": "revoke_hosting", "reason": "audit", "effective_at": "2020-03-01"}
        restore = {**revoke, "command": "restore_hosting", "effective_at": "2020-04-01"}
        # read; then the account's entry is replaced before the next add (as a follow
        # thread's add racing the read would): the facts read are stale, not taken back
        read = log.account_facts("us-1")
        assert [f.type for f in read] == ["AccountRegistered"]
        other.apply([{**revoke, "account_id": "us-1"}])
        (revoked,) = [f for f in other.log.account_facts("us-1") if f.version == 2]
        racing = SimpleNamespace(
            accounts={"us-1": [*read, revoked]}, regions={}, position=other.log.position
        )
        log.index.update(racing, Changed(accounts={"us-1"}))
        log.position = other.log.position  # as if the racing add had taken the revocation
        other.apply([{**restore, "account_id": "us-1"}])
        writer.catch_up()
        # read, nothing changes meanwhile: taken back as read, the new event added to them
        log.account_facts("us-2")
        writer.apply([{**revoke, "account_id": "us-2"}])
        for account_id in ("us-1", "us-2"):
            facts = sorted(log.account_facts(account_id), key=lambda f: f.version)
            assert [f.as_dict() for f in facts] == writer.history(account_id)
        assert [h["type"] for h in writer.history("us-1")] == [
            "AccountRegistered",
            "HostingRevoked",
            "HostingRestored",
        ]
        assert writer.check("us-1", "host", at="2020-03-15").allowed is False
        assert writer.check("us-1", "host").allowed is True
        assert writer.check("us-2", "host").allowed is False


def test_no_fact_list_outlives_a_catch_up_or_a_batch_of_changed_accounts(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(light_log, "COMPACT_EVERY", 4)
    accounts = [f"cn-{i}" for i in range(10)]
    with open_engine(store_url) as writer:
        writer.apply([_register(a, "CN", "free") for a in accounts])
        loose = [a for a, entry in writer.index.accounts.items() if code_of(entry) is None]
        assert len(loose) < 4  # encoded in batches of 4 as the writer took its own events in
        with open_engine(store_url) as reader:  # from the log: encoded at the catch-up's end
            assert all(code_of(entry) is not None for entry in reader.index.accounts.values())
            assert isinstance(reader.projector.log, LightLog)
            rule = {
                "command": "apply_region_rule",
                "region": "CN",
                "rule": "free_hosting_suspended",
                "effective_at": "2020-05-19",
            }
            writer.apply([rule])
            reader.catch_up()
            assert all(code_of(entry) is not None for entry in reader.index.accounts.values())
            for a in accounts:
                facts = sorted(reader.log.account_facts(a), key=lambda f: f.version)
                assert [f.as_dict() for f in facts] == writer.history(a)
