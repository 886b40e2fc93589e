"""The log's integrity chain (SQLite and PostgreSQL): every record the engine writes is
chained in log order, and an edited, deleted, inserted or reordered row is found at its
position; a receipt catches a chain recomputed after an edit; a snapshot cannot hide it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from entitlements import open_engine
from entitlements.adapters import integrity
from entitlements.application import fan_out as fan_out_module
from entitlements.application import integrity_check
from entitlements.application.engine import Engine
from tests.conftest import read_jsonl, scenario_file
from tests.integration.tamper import Tamper


def china(engine: Engine) -> None:
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))


def verify(engine: Engine, receipt: tuple[str, int] | None = None) -> integrity.Verification:
    return integrity_check.verify(engine.app, receipt)


def revocation(t: Tamper, account_id: str) -> int:
    """Position of cn-free-01's HostingRevoked (the rule's): its stream is the account's."""
    from entitlements.domain.account import account_uuid

    uid = account_uuid(account_id)
    return next(p for p, s, _, topic, _ in t.rows() if s == uid and topic.endswith("Revoked"))


def test_china_2020_verifies_and_every_record_is_chained(engine: Engine) -> None:
    china(engine)
    v = verify(engine)
    assert v.ok and v.legacy == 0 and v.starts_at == 1
    assert v.chained == engine.position() == v.position
    assert v.hash == integrity.stored_hash(engine.app, engine.position())
    assert verify(engine, (v.hash, v.position)).ok  # type: ignore[arg-type]


def test_an_edited_effective_date_is_caught_at_its_position(store_url: str, engine: Engine) -> None:
    china(engine)
    assert not engine.check("cn-free-01", "host", at="2020-06-01").allowed
    engine.projector.save_snapshot()  # a snapshot from before the edit cannot hide it
    t = Tamper(engine)
    at = revocation(t, "cn-free-01")
    _, _, _, _, state = t.row(at)
    state["effective_at"] = datetime(2020, 7, 1, tzinfo=UTC)
    t.set_state(at, state)
    with open_engine(store_url) as reopened:  # from the snapshot: verify reads the log itself
        v = verify(reopened)
        assert (v.ok, v.kind, v.position) == (False, "edited", at)
        assert "\n" not in (v.reason or "")
    snapshot = engine.projector.snapshot_file
    assert snapshot is not None
    snapshot.unlink()
    with open_engine(store_url) as from_the_log:  # what the edit does to an answer
        assert from_the_log.check("cn-free-01", "host", at="2020-06-01").allowed


def test_a_deleted_row_is_caught_where_the_chain_breaks(engine: Engine) -> None:
    china(engine)
    t = Tamper(engine)
    t.delete(20)
    v = verify(engine)
    assert (v.ok, v.kind, v.position) == (False, "deleted", 21)
    assert "between positions 19 and 21" in (v.reason or "")


def test_an_inserted_row_is_caught_at_its_position(engine: Engine) -> None:
    china(engine)
    t = Tamper(engine)
    _, stream, version, topic, state = t.row(30)
    t.insert(31, stream, version + 100, topic, {**state, "reason": "forged"})
    v = verify(engine)
    assert (v.ok, v.kind, v.position) == (False, "inserted", 31)


def test_a_forged_row_with_a_correct_link_is_caught_as_inserted(engine: Engine) -> None:
    china(engine)
    t = Tamper(engine)
    _, stream, version, topic, state = t.row(30)
    forged = {k: v for k, v in state.items() if k != "chain"} | {"reason": "forged"}
    prev = state["chain"]["hash"]
    h = integrity.link(prev, integrity.content(stream, version + 100, topic, forged))
    t.insert(31, stream, version + 100, topic, {**forged, "chain": {"prev": prev, "hash": h}})
    v = verify(engine)
    assert (v.ok, v.kind, v.position) == (False, "inserted", 31)


def test_a_row_without_a_chain_after_chained_ones_is_caught(engine: Engine) -> None:
    china(engine)
    t = Tamper(engine)
    _, stream, version, topic, state = t.row(30)
    t.insert(31, stream, version + 100, topic, {k: v for k, v in state.items() if k != "chain"})
    v = verify(engine)
    assert (v.ok, v.kind, v.position) == (False, "inserted", 31)


@pytest.mark.parametrize("i, j", [(12, 13), (12, 40)])
def test_swapped_rows_are_caught_as_reordered(engine: Engine, i: int, j: int) -> None:
    china(engine)
    Tamper(engine).swap(i, j)
    v = verify(engine)
    assert (v.ok, v.kind, v.position) == (False, "reordered", i)


def test_a_rewritten_chain_passes_alone_but_not_against_a_receipt(engine: Engine) -> None:
    china(engine)
    before = verify(engine)
    assert before.hash is not None
    receipt = (before.hash, before.position)
    early = (integrity.stored_hash(engine.app, 10) or "", 10)
    t = Tamper(engine)
    at = revocation(t, "cn-free-01")
    _, _, _, _, state = t.row(at)
    t.set_state(at, {**state, "effective_at": datetime(2020, 7, 1, tzinfo=UTC)})
    t.rechain()
    assert verify(engine).ok  # a consistent forgery from scratch
    v = verify(engine, receipt)
    assert (v.ok, v.kind) == (False, "receipt") and v.receipt and v.receipt["holds"] is False
    assert at > 10 and verify(engine, early).ok  # the log up to 10 is unchanged indeed


def test_a_receipt_beyond_a_truncated_log_fails(engine: Engine) -> None:
    china(engine)
    v = verify(engine)
    assert v.hash is not None
    Tamper(engine).delete(v.position)  # the last row: nothing after it to break
    w = verify(engine, (v.hash, v.position))
    assert (w.ok, w.kind) == (False, "receipt")


def test_a_group_commit_and_a_fan_out_in_several_transactions_are_chained(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fan_out_module, "FAN_OUT_BATCH", 3)
    sign_ups = [
        {
            "command": "register_account",
            "account_id": f"a{i}",
            "region": "CN",
            "plan": "free",
            "channel": "online",
            "effective_at": "2020-01-01",
        }
        for i in range(20)
    ]
    rule = {
        "command": "apply_region_rule",
        "region": "CN",
        "rule": "free_hosting_suspended",
        "effective_at": "2020-02-01",
    }
    results = engine.apply([*sign_ups, rule])  # one group, then a fan-out in 7 batches
    assert all(r.status == "applied" for r in results)
    v = verify(engine)
    assert v.ok and v.chained == engine.position() == 20 * 2 + 2 + 20 + 1 + 1


def test_two_writers_taking_turns_keep_one_chain(store_url: str, engine: Engine) -> None:
    with open_engine(store_url) as other:
        for i in range(6):
            writer = engine if i % 2 else other
            writer.apply(
                [
                    {
                        "command": "register_account",
                        "account_id": f"w{i}",
                        "region": "US",
                        "plan": "pro",
                        "channel": "online",
                        "effective_at": "2020-01-01",
                    }
                ]
            )
    assert verify(engine).ok


def test_a_writer_started_from_a_snapshot_chains_onto_the_stored_head(store_url: str) -> None:
    with open_engine(store_url) as first:
        china(first)
        first.projector.save_snapshot()
    with open_engine(store_url) as second:
        second.apply(
            [
                {
                    "command": "revoke_hosting",
                    "account_id": "cn-ent-01",
                    "reason": "after the snapshot",
                    "effective_at": "2020-12-01",
                }
            ]
        )
        assert verify(second).ok


def test_records_from_before_the_chain_come_first_and_only_first(engine: Engine) -> None:
    engine.saver.chain = False
    china(engine)
    legacy = engine.position()
    engine.saver.chain = True
    engine.apply(
        [
            {
                "command": "revoke_hosting",
                "account_id": "cn-ent-01",
                "reason": "chained",
                "effective_at": "2020-12-01",
            }
        ]
    )
    v = verify(engine)
    assert v.ok and (v.legacy, v.starts_at) == (legacy, legacy + 1)
    t = Tamper(engine)
    t.delete(legacy)  # the record the genesis names
    w = verify(engine)
    assert (w.ok, w.position) == (False, legacy + 1)


def test_a_record_stripped_of_its_chain_is_caught(engine: Engine) -> None:
    china(engine)
    t = Tamper(engine)
    _, _, _, _, state = t.row(25)
    t.set_state(25, {k: v for k, v in state.items() if k != "chain"})
    v = verify(engine)
    assert (v.ok, v.kind, v.position) == (False, "edited", 25)


def test_the_export_names_the_chain_head(engine: Engine) -> None:
    from entitlements.application import audit

    china(engine)
    case: dict[str, Any] = audit.export_case(engine, account_id="cn-free-01")
    v = verify(engine)
    assert case["head"] == {"position": v.position, "hash": v.hash}


def test_an_event_of_a_later_class_version_verifies_as_stored(engine: Engine) -> None:
    """The hash covers the state as stored (class_version included), not as upcast on read."""
    from tests.integration.test_event_versions import Gadget

    gadget = Gadget()
    gadget.rename(name="new", effective_at=datetime(2020, 1, 1, tzinfo=UTC))
    events = gadget.collect_events()
    integrity.seal(events, integrity.head_at(engine.app, engine.position()))
    engine.app.events.put(events)
    assert verify(engine).ok and verify(engine).chained == 2
