"""Malformed commands are refused whole, naming the item and the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from entitlements import MalformedCommand
from entitlements.commands import parse_commands, parse_time
from entitlements.engine import Engine

OK = {"command": "register_account", "account_id": "a-1", "region": "CN", "plan": "free",
      "channel": "online", "effective_at": "2020-01-01", "recorded_at": "2020-01-01"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"command": "register_acount"}, "command"),
        ({"colour": "blue"}, "colour"),
        ({"effective_at": None}, "effective_at"),
        ({"plan": "gold"}, "plan"),
        ({"channel": "fax"}, "channel"),
        ({"region": "cn"}, "region"),
        ({"region": "CHN"}, "region"),
        ({"account_id": "a b"}, "account_id"),
        ({"account_id": "x" * 65}, "account_id"),
        ({"channel": "partner"}, "partner"),
        ({"partner": "Systec Umeet"}, "partner"),
        ({"effective_at": "2020-13-01"}, "effective_at"),
        ({"recorded_at": "3020-01-01"}, "recorded_at"),
    ],
)
def test_a_malformed_item_names_its_field(change: dict, field: str) -> None:
    item = {k: v for k, v in {**OK, **change}.items() if v is not None}
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(7, item)])
    assert (e.value.item, e.value.field) == (7, field)
    assert f"line 7, field '{field}'" in str(e.value)


def test_a_rule_outside_the_list_is_malformed() -> None:
    item = {"command": "apply_region_rule", "region": "CN", "rule": "no_fun", "effective_at": "2020-01-01"}
    with pytest.raises(MalformedCommand, match="rule"):
        parse_commands([(1, item)])


def test_recorded_at_going_backwards_within_a_batch_is_malformed() -> None:
    later = {**OK, "account_id": "a-2", "recorded_at": "2019-12-31"}
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(1, OK), (2, later)])
    assert (e.value.item, e.value.field) == (2, "recorded_at")


def test_a_non_object_item_is_malformed() -> None:
    with pytest.raises(MalformedCommand, match="JSON object"):
        parse_commands([(1, ["register_account"])])


def test_engine_apply_refuses_a_malformed_batch_and_applies_nothing(engine: Engine) -> None:
    bad = {**OK, "account_id": "a-2", "plan": "gold"}
    with pytest.raises(ValueError, match="item 2, field 'plan'"):
        engine.apply([OK, bad])
    assert engine.position() == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-05-19", datetime(2020, 5, 19, tzinfo=UTC)),
        ("2020-05-19T08:30:00", datetime(2020, 5, 19, 8, 30, tzinfo=UTC)),
        ("2020-05-19T08:30:00Z", datetime(2020, 5, 19, 8, 30, tzinfo=UTC)),
        ("2020-05-19T16:30:00+08:00", datetime(2020, 5, 19, 8, 30, tzinfo=UTC)),
        (datetime(2020, 5, 19, 8, 30), datetime(2020, 5, 19, 8, 30, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_and_utc_when_no_offset_is_given(text: object, expected: datetime) -> None:
    assert parse_time(text) == expected
