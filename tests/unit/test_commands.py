"""Malformed commands are refused whole, naming the item and the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements import MalformedCommand
from entitlements.application.engine import Engine
from entitlements.domain.commands import (
    ApplyRegionRule,
    AuthorizePartner,
    LiftRegionRule,
    RevokeHosting,
    UnreadableCommandFile,
    parse_commands,
    read_command_file,
    with_derived_id,
)
from entitlements.domain.times import parse_time

OK = {
    "command": "register_account",
    "account_id": "a-1",
    "region": "CN",
    "plan": "free",
    "channel": "online",
    "effective_at": "2020-01-01",
    "recorded_at": "2020-01-01",
}


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
def test_a_malformed_item_names_its_field(change: dict[str, Any], field: str) -> None:
    item = {k: v for k, v in {**OK, **change}.items() if v is not None}
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(7, item)])
    assert (e.value.item, e.value.field) == (7, field)
    assert f"line 7, field '{field}'" in str(e.value)


def test_a_rule_outside_the_list_is_malformed() -> None:
    item = {
        "command": "apply_region_rule",
        "region": "CN",
        "rule": "no_fun",
        "effective_at": "2020-01-01",
    }
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
def test_times_are_iso_8601_and_utc_when_no_offset_is_given(
    text: object, expected: datetime
) -> None:
    assert parse_time(text) == expected


# -- hostile input: nothing that validates may fail in a store ------------------------------

REASONED = {
    "command": "revoke_hosting",
    "account_id": "a-1",
    "reason": "x",
    "effective_at": "2020-01-01",
}


def write_lines(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def refused_line(path: Path) -> MalformedCommand:
    with pytest.raises(MalformedCommand) as e:
        parse_commands(read_command_file(path))
    return e.value


GOOD_LINE = json.dumps(OK).encode()


@pytest.mark.parametrize(
    ("line", "field"),
    [
        (
            b'{"command": "suspend_account", "account_id": "a-1", "jurisdiction": "CN", '
            b'"jurisdiction": "platform", "reason": "x", "effective_at": "2020-01-01"}',
            "jurisdiction",
        ),
        (
            b'{"command": "revoke_hosting", "extra": [{"k": 1, "k": 2}], "effective_at": "2020-01-01"}',
            "k",
        ),
    ],
)
def test_a_key_given_twice_is_malformed_at_any_depth(
    tmp_path: Path, line: bytes, field: str
) -> None:
    e = refused_line(write_lines(tmp_path / "c.jsonl", GOOD_LINE, line))
    assert (e.item, e.field, e.message) == (2, field, "key given twice")


BAD_TEXT = ["\x00", "\t", "\n", "\x1f", "\x7f", "\x80", "\x85", "\x9f", "\ud800", "\udfff"]


@pytest.mark.parametrize("char", BAD_TEXT)
@pytest.mark.parametrize("field", ["reason", "actor", "command_id", "account_id"])
def test_a_control_character_or_lone_surrogate_in_a_string_is_malformed(
    char: str, field: str
) -> None:
    item = {**REASONED, field: f"a{char}b"}
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(3, item)], "item")
    assert (e.value.item, e.value.field) == (3, field)
    assert f"U+{ord(char):04X}" in e.value.message


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({**REASONED, "re\x00ason": "x"}, "re\\x00ason"),  # a key: named escaped
        ({**REASONED, "extra": {"deep": ["ok", "no\x00"]}}, "extra.deep.1"),
        ({**REASONED, "reason": b"bytes"}, "reason"),  # pydantic would decode bytes unchecked
    ],
)
def test_unstorable_text_is_found_in_keys_nested_values_and_bytes(
    item: dict[str, Any], field: str
) -> None:
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(1, item)])
    assert e.value.field == field
    assert "\x00" not in str(e.value)


def test_a_nul_or_lone_surrogate_escaped_in_a_file_is_malformed(tmp_path: Path) -> None:
    for escape in (b"\\u0000", b"\\ud800"):
        line = (
            b'{"command": "revoke_hosting", "account_id": "a-1", "reason": "x'
            + escape
            + b'", "effective_at": "2020-01-01"}'
        )
        e = refused_line(write_lines(tmp_path / "c.jsonl", GOOD_LINE, line))
        assert (e.item, e.field) == (2, "reason")


def test_a_cyclic_or_very_deep_item_is_malformed_not_a_crash() -> None:
    cyclic: dict[str, Any] = {**REASONED}
    cyclic["extra"] = cyclic
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for item in (cyclic, {**REASONED, "extra": deep}):
        with pytest.raises(MalformedCommand, match="extra"):
            parse_commands([(1, item)])


def test_non_ascii_text_is_fine() -> None:
    (cmd,) = parse_commands([(1, {**REASONED, "reason": "Zhōngguó 中国 😀 — ok", "actor": "Ünal"})])
    assert isinstance(cmd, RevokeHosting)
    assert cmd.reason == "Zhōngguó 中国 😀 — ok"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0001-01-01T00:00:00+01:00", "before the year 1900"),  # was an OverflowError
        ("9999-12-31T23:00:00-02:00", "after the year 9999"),
        ("1899-12-31", "before the year 1900"),
        ("1900-01-01T00:00:00+01:00", "before the year 1900"),  # once its offset is applied
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), "before the year 1900"),
        ("10000-01-01", "not an ISO 8601"),
        ("2020-01-01T25:00", "not an ISO 8601"),
    ],
)
def test_a_time_outside_1900_to_9999_or_malformed_is_a_value_error(
    text: object, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_time(text)
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(4, {**OK, "effective_at": text})])
    assert (e.value.item, e.value.field) == (4, "effective_at")


@pytest.mark.parametrize(
    "text", ["1900-01-01", "9999-12-31T23:59:59.999999", "9999-12-31T23:00:00+02:00"]
)
def test_times_at_the_edges_of_the_range_are_fine(text: str) -> None:
    assert 1900 <= parse_time(text).year <= 9999


def test_a_long_bad_time_is_named_briefly() -> None:
    with pytest.raises(ValueError) as e:
        parse_time("x" * 10_000)
    assert len(str(e.value)) < 100


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"\xff\xfe", "not UTF-8 (byte 1)"),
        (b'{"reason": "caf\xe9"}', "not UTF-8 (byte 16)"),
        (b'{"reason": "\xed\xa0\x80"}', "not UTF-8"),  # an encoded surrogate
        (b"[" * 100_000, "bad JSON: nested too deeply"),
        (b'{"effective_at": ' + b"9" * 5000 + b"}", "bad JSON"),  # more digits than int() takes
        (b"\x0c", "bad JSON"),  # not JSON whitespace, so not a blank line
    ],
)
def test_a_line_that_is_not_utf8_or_not_json_is_refused_by_its_number(
    tmp_path: Path, line: bytes, message: str
) -> None:
    e = refused_line(write_lines(tmp_path / "c.jsonl", GOOD_LINE, b"", line))
    assert e.item == 3 and message in e.message


def test_crlf_and_blank_lines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(GOOD_LINE + b"\r\n \t\r\n")
    assert [n for n, _ in read_command_file(path)] == [1]


@pytest.mark.parametrize("name", ["missing.jsonl", "."])
def test_an_unreadable_command_file_is_a_clear_value_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnreadableCommandFile, match="cannot read"):
        read_command_file(tmp_path / name)


# Every command's valid shape; the fuzz below replaces its free-text fields.
SHAPES = [
    OK,
    {"command": "approve_registration", "account_id": "a", "channel": "partner", "partner": "P"},
    {"command": "open_subscription", "account_id": "a", "plan": "pro", "channel": "online"},
    {"command": "close_subscription", "account_id": "a", "reason": "r"},
    REASONED,
    {"command": "restore_hosting", "account_id": "a", "reason": "r"},
    {"command": "move_to_partner", "account_id": "a", "partner": "P"},
    {"command": "suspend_account", "account_id": "a", "jurisdiction": "CN", "reason": "r"},
    {"command": "reinstate_account", "account_id": "a", "reason": "r"},
    {"command": "authorize_partner", "region": "CN", "partner": "P"},
    {"command": "apply_region_rule", "region": "CN", "rule": "free_hosting_suspended"},
    {"command": "lift_region_rule", "region": "CN", "rule": "free_hosting_suspended"},
]
FREE_TEXT = [
    "reason",
    "partner",
    "actor",
    "command_id",
    "account_id",
    "jurisdiction",
    "region",
    "effective_at",
    "recorded_at",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
iso_times = st.builds(
    lambda dt, minutes: dt.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(),
    st.integers(-24 * 60 + 1, 24 * 60 - 1),
)
field_values = st.text() | iso_times | json_values


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from(SHAPES),
    changes=st.dictionaries(st.sampled_from(FREE_TEXT), field_values, max_size=4),
    extra=st.dictionaries(st.text(), json_values, max_size=1),
)
def test_any_item_either_validates_storably_or_is_malformed(
    shape: dict[str, Any], changes: dict[str, Any], extra: dict[str, Any]
) -> None:
    item = {"effective_at": "2020-01-01", **shape, **changes, **(extra if len(changes) % 2 else {})}
    try:
        (cmd,) = parse_commands([(1, item)], "item")
    except MalformedCommand as e:
        assert "\n" not in str(e) and len(str(e)) < 400
        return
    content = with_derived_id(cmd).model_dump(mode="json")
    for value in content.values():
        if isinstance(value, str):
            value.encode("utf-8")  # no lone surrogates
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    assert 1900 <= cmd.effective_at.year <= 9999 and cmd.effective_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("actor", ["", "a\u2028b", "zero\u200bwidth", "x" * 201])
def test_an_actor_is_one_to_200_printable_characters(actor: str) -> None:
    item = {
        "command": "authorize_partner",
        "region": "CN",
        "partner": "P",
        "effective_at": "2020-01-01",
        "actor": actor,
    }
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(3, item)])
    assert (e.value.item, e.value.field) == (3, "actor")


def test_command_id_actor_and_jurisdiction_are_checked_like_every_field() -> None:
    base = {
        "command": "revoke_hosting",
        "account_id": "a",
        "reason": "r",
        "effective_at": "2020-01-01",
    }
    for field, value in (
        ("command_id", "has space"),
        ("command_id", "x" * 129),
        ("jurisdiction", "cn"),
        ("jurisdiction", "PLATFORM"),
    ):
        with pytest.raises(MalformedCommand) as e:
            parse_commands([(1, {**base, field: value})])
        assert e.value.field == field
    (ok,) = parse_commands(
        [
            (
                1,
                {
                    **base,
                    "command_id": "crm-7731",
                    "actor": "ops@example",
                    "jurisdiction": "platform",
                },
            )
        ]
    )
    assert not isinstance(ok, AuthorizePartner | ApplyRegionRule | LiftRegionRule)
    assert (ok.command_id, ok.actor, ok.jurisdiction) == ("crm-7731", "ops@example", "platform")


INVISIBLE = ["\u202e", "\u202d", "\u2066", "\u200b", "\u200e", "\ufeff", "\u2028", "\ue000"]


@pytest.mark.parametrize("char", INVISIBLE)
@pytest.mark.parametrize("field", ["reason", "actor"])
def test_free_text_refuses_invisible_and_bidi_characters_by_one_rule(char: str, field: str) -> None:
    """A bidi override (U+202E) in a reason reorders what an auditor reads, as in an actor:
    one rule for both fields, the error naming the field and the character."""
    with pytest.raises(MalformedCommand) as e:
        parse_commands([(3, {**REASONED, field: f"paid\u00a0{char}refund"})], "item")
    assert (e.value.item, e.value.field) == (3, field)
    assert f"U+{ord(char):04X}" in e.value.message and "visible text" in e.value.message


@pytest.mark.parametrize("text", ["court order 2020-17", "政府要求 テスト", "a\u00a0b\u3000c"])
def test_free_text_keeps_every_visible_character_and_space(text: str) -> None:
    (cmd,) = parse_commands([(1, {**REASONED, "reason": text, "actor": text})], "item")
    assert (getattr(cmd, "reason", None), cmd.actor) == (text, text)
