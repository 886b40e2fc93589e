"""Group commit: several commands per transaction, each deciding against what the earlier
ones of its group decided; results only after the commit; a failing group loses nothing
(on SQLite and PostgreSQL). And the fan-out's direct path equals the folding one."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.domain.decisions import CommandResult


def cmd(command: str, on: str, **fields: Any) -> dict[str, Any]:
    return {"command": command, **fields, "effective_at": on}


def register(account_id: str, region: str = "US", plan: str = "pro", **more: Any) -> dict[str, Any]:
    return cmd(
        "register_account",
        "2020-01-01",
        account_id=account_id,
        region=region,
        plan=plan,
        channel="online",
        **more,
    )


def positions_of(results: list[CommandResult]) -> list[int]:
    """Every result's position (each has one)."""
    positions = [r.position for r in results if r.position is not None]
    assert len(positions) == len(results)
    return positions


def count_transactions(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Events per transaction, as the recorder is asked to insert them."""
    sizes: list[int] = []
    real = engine.app.recorder.insert_events

    def spy(stored_events: Any, **kwargs: Any) -> Any:
        sizes.append(len(stored_events))
        return real(stored_events, **kwargs)

    monkeypatch.setattr(engine.app.recorder, "insert_events", spy)
    return sizes


def test_two_commands_on_one_account_in_one_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_transactions(engine, monkeypatch)
    results = engine.apply(
        [
            register("a"),
            cmd("revoke_hosting", "2020-02-01", account_id="a", reason="review"),
            cmd("restore_hosting", "2020-03-01", account_id="a", reason="cleared"),
            cmd("restore_hosting", "2020-03-02", account_id="a", reason="twice"),  # rejected
        ]
    )
    assert [r.status for r in results] == ["applied"] * 3 + ["rejected"]
    assert sizes == [7]  # 3 account events + 4 command records, one transaction
    history = engine.history("a")
    assert [e["type"] for e in history] == [
        "AccountRegistered",
        "HostingRevoked",
        "HostingRestored",
    ]
    assert [e["version"] for e in history] == [1, 2, 3]
    positions = positions_of(results)
    assert positions == sorted(positions) and positions[-1] == engine.position()
    assert engine.check("a", "host").allowed
    (entry,) = engine.rejections()
    assert entry["reason"] == results[-1].reason and entry["position"] == positions[-1]


def test_register_then_subscribe_and_a_rule_then_a_registration_in_one_group(
    engine: Engine,
) -> None:
    results = engine.apply(
        [
            cmd("apply_region_rule", "2020-01-01", region="CN", rule="registration_suspended"),
            register("cn-1", region="CN", plan="free"),  # suspended by the rule just applied
            register("us-1", plan="free"),
            cmd("open_subscription", "2020-02-01", account_id="us-1", plan="pro", channel="online"),
            cmd("open_subscription", "2020-02-01", account_id="cn-1", plan="pro", channel="online"),
            register("us-1"),  # exists already (earlier in the group)
        ]
    )
    assert [r.status for r in results] == [
        "applied",
        "applied",
        "applied",
        "applied",
        "rejected",
        "rejected",
    ]
    assert results[4].reason == "registration of cn-1 is suspended: approve it first"
    assert results[5].reason == "account us-1 already exists"
    assert not engine.check("cn-1", "host").allowed
    assert engine.check("us-1", "max_meeting_minutes").value == 1440  # pro


def test_a_fan_out_rule_in_a_batch_ends_its_group_and_later_commands_see_it(
    engine: Engine,
) -> None:
    results = engine.apply(
        [
            register("cn-1", region="CN", plan="free"),
            register("cn-2", region="CN", plan="free"),
            cmd("apply_region_rule", "2020-01-02", region="CN", rule="free_hosting_suspended"),
            register("cn-3", region="CN", plan="free"),
        ]
    )
    assert [r.status for r in results] == ["applied"] * 4
    assert not any(engine.check(a, "host").allowed for a in ("cn-1", "cn-2", "cn-3"))
    positions = positions_of(results)
    assert positions[2] < positions[3] == engine.position()


def test_the_same_command_id_twice_in_one_group(engine: Engine) -> None:
    first = register("a", command_id="c-1")
    other = register("b", command_id="c-1")  # the same id for another command
    results = engine.apply([first, first, other, first])
    assert [(r.status, r.duplicate) for r in results] == [
        ("applied", False),
        ("applied", True),
        ("rejected", False),
        ("applied", True),
    ]
    assert results[0].position == results[1].position == results[3].position
    assert results[2].reason == "command_id c-1 was used for a different command"
    assert "b" not in engine.facts.accounts
    again = engine.apply([first])
    assert (again[0].duplicate, again[0].position) == (True, results[0].position)


@pytest.mark.parametrize("error", [IntegrityError, OperationalError])
def test_a_group_whose_transaction_fails_falls_back_and_loses_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    engine.apply([register("a")])
    real_save, calls = engine.app.save, []

    def fail_once(*objs: Any, **kwargs: Any) -> Any:
        calls.append(len(objs))
        if len(calls) == 1:
            raise error("the group's transaction failed")
        return real_save(*objs, **kwargs)

    monkeypatch.setattr(engine.app, "save", fail_once)
    batch = [
        cmd("revoke_hosting", "2020-02-01", account_id="a", reason="one"),
        register("b"),
        cmd("revoke_hosting", "2020-02-02", account_id="b", reason="two"),
        cmd("revoke_hosting", "2020-02-03", account_id="a", reason="again"),  # rejected
    ]
    batch = [{**c, "command_id": f"c-{i}"} for i, c in enumerate(batch)]
    results = engine.apply(batch)
    assert [r.status for r in results] == ["applied"] * 3 + ["rejected"]
    assert not any(r.duplicate for r in results)
    assert len(calls) == 1 + len(batch)  # the group, then one transaction per command
    assert [e["version"] for e in engine.history("a")] == [1, 2]
    assert [e["reason"] for e in engine.history("b") if e["type"] == "HostingRevoked"] == ["two"]
    positions = positions_of(results)
    assert positions == sorted(positions) and len(set(positions)) == 4
    # Exactly once: the same batch again records nothing and reports the same positions.
    end = engine.position()
    again = engine.apply(batch)
    assert [(r.duplicate, r.position) for r in again] == [(True, p) for p in positions]
    assert engine.position() == end


def test_a_result_is_yielded_only_once_its_transaction_committed(
    store_url: str, engine: Engine
) -> None:
    """A consumer that reads the store (through another connection) between results finds
    each result's command record at its position."""
    batch = [register(f"a-{i}") for i in range(30)]
    batch += [
        cmd("revoke_hosting", "2020-02-01", account_id=f"a-{i}", reason="r") for i in range(30)
    ]
    with open_engine(store_url) as reader:
        seen = 0
        for r in engine.apply_iter(list(enumerate(engine_parse(batch), 1))):
            (n,) = reader.app.recorder.select_notifications(start=r.position, limit=1)
            record: Any = reader.app.mapper.to_domain_event(n)
            assert (type(record).__name__, record.command_id) == ("CommandApplied", r.command_id)
            seen += 1
    assert seen == len(batch)


def engine_parse(batch: list[dict[str, Any]]) -> list[Any]:
    from entitlements.domain.commands import parse_commands

    return parse_commands(enumerate(batch, 1), "item")


def write_batches(url: str, name: str, start: Any, out: Any) -> None:
    """Many commands per call (groups), on accounts the other writer writes too."""
    start.wait(10)
    try:
        with open_engine(url) as engine:
            statuses: list[str] = []
            for round_ in range(4):
                batch = [
                    cmd(
                        "open_subscription",
                        "2020-01-02",
                        account_id=f"shared-{i}",
                        plan="business",
                        channel="direct",
                        command_id=f"{name}-{round_}-{i}",
                    )
                    for i in range(10)
                ] + [register(f"{name}-{round_}-{i}") for i in range(20)]
                statuses += [r.status for r in engine.apply(batch)]
            out.put(statuses)
    except Exception as e:  # report, don't hang the test
        out.put([f"error: {e!r}"])


def test_concurrent_writers_applying_groups_lose_nothing(store_url: str, engine: Engine) -> None:
    engine.apply([register(f"shared-{i}") for i in range(10)])
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    names = ("w1", "w2")
    workers = [ctx.Process(target=write_batches, args=(store_url, n, start, out)) for n in names]
    for w in workers:
        w.start()
    start.set()
    results = [out.get(timeout=180) for _ in workers]
    for w in workers:
        w.join(30)
    assert all(s == ["applied"] * 120 for s in results), results
    engine.catch_up()
    for i in range(10):
        history = engine.history(f"shared-{i}")
        assert [e["version"] for e in history] == list(range(1, 10))  # 1 + 2 writers x 4
        assert sorted(e["command_id"] for e in history[1:]) == sorted(
            f"{n}-{r}-{i}" for n in names for r in range(4)
        )
    assert sum(a.startswith(("w1-", "w2-")) for a in engine.facts.accounts) == 160


def test_a_kept_aggregate_is_used_without_a_read_and_refreshed_after_a_fan_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.apply([register("cn-1", region="CN", plan="free")])
    real_get, gets = engine.app.events.get, []

    def counting_get(*args: Any, **kwargs: Any) -> Any:  # an aggregate's events read
        gets.append(kwargs.get("originator_id", args[0] if args else None))
        return real_get(*args, **kwargs)

    monkeypatch.setattr(engine.app.events, "get", counting_get)
    (revoked,) = engine.apply([cmd("revoke_hosting", "2020-01-05", account_id="cn-1", reason="x")])
    assert revoked.status == "applied" and gets == []  # the kept aggregate: current, no read
    engine.apply([cmd("restore_hosting", "2020-01-06", account_id="cn-1", reason="y")])
    # A fan-out records cn-1's HostingRevoked without the aggregate: the kept one is stale.
    engine.apply(
        [cmd("apply_region_rule", "2020-01-10", region="CN", rule="free_hosting_suspended")]
    )
    real_save, saves = engine.app.save, []

    def counting_save(*objs: Any, **kwargs: Any) -> Any:
        saves.append(1)
        return real_save(*objs, **kwargs)

    monkeypatch.setattr(engine.app, "save", counting_save)
    (opened,) = engine.apply(
        [cmd("open_subscription", "2020-02-01", account_id="cn-1", plan="pro", channel="online")]
    )
    assert opened.status == "applied" and len(saves) == 1  # no conflict, no retry
    assert len(gets) == 1  # reloaded once: the facts held a newer version
    history = engine.history("cn-1")
    assert [e["type"] for e in history][-3:] == [
        "HostingRevoked",
        "SubscriptionOpened",
        "HostingRestored",
    ]
    assert [e["version"] for e in history] == list(range(1, 7))
    assert engine.check("cn-1", "host").allowed
