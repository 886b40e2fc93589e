"""A repeat of a recorded rejection is a duplicate, recorded once: also the rejection of a
`command_id` reused for another command, which re-running the file recorded again each time
(issue 17, item 8). SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from entitlements import open_engine
from entitlements.application.engine import Engine

REASON = "command_id c-1 was used for a different command"


def register(account_id: str, command_id: str = "c-1") -> dict[str, Any]:
    return {
        "command": "register_account",
        "account_id": account_id,
        "region": "US",
        "plan": "pro",
        "channel": "online",
        "effective_at": "2020-01-01",
        "command_id": command_id,
    }


FILE = [register("a"), register("b")]  # the second line reuses the first one's id


def test_re_running_a_file_with_a_reused_id_records_its_rejection_once(engine: Engine) -> None:
    first = engine.apply(FILE)
    assert [(r.status, r.reason) for r in first] == [("applied", None), ("rejected", REASON)]
    position = engine.position()
    for _ in range(2):
        again = engine.apply(FILE)
        assert [(r.status, r.reason, r.duplicate) for r in again] == [
            ("applied", None, True),
            ("rejected", REASON, True),
        ]
        assert [r.position for r in again] == [r.position for r in first]
    assert engine.position() == position
    assert len(engine.rejections()) == 1


def test_a_repeat_in_another_process_or_after_a_restart_is_a_duplicate(store_url: str) -> None:
    with open_engine(store_url) as one, open_engine(store_url) as two:
        one.apply(FILE)
        (_, again) = two.apply(FILE)  # its book had not seen the rejection
        assert again.duplicate and again.status == "rejected"
    with open_engine(store_url) as restarted:
        (_, third) = restarted.apply(FILE)
        assert third.duplicate and len(restarted.rejections()) == 1


def test_the_same_attempt_twice_in_one_group_is_recorded_once(engine: Engine) -> None:
    results = engine.apply([*FILE, register("b")])
    assert [(r.status, r.duplicate) for r in results] == [
        ("applied", False),
        ("rejected", False),
        ("rejected", True),
    ]
    assert results[1].position == results[2].position
    assert len(engine.rejections()) == 1


def test_another_command_under_the_same_id_is_another_attempt_on_file(engine: Engine) -> None:
    engine.apply(FILE)
    (_, other) = engine.apply([register("a"), register("c")])
    assert (other.status, other.duplicate) == ("rejected", False)
    assert [e["request"]["account_id"] for e in engine.rejections()] == ["b", "c"]
