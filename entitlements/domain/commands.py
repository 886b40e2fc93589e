"""Commands: one pydantic model per command, and the JSON Lines command file.

A malformed item (bad JSON, unknown command or field, a value outside its list, a bad
time) refuses the whole batch before anything is applied, naming the item and field.
Nothing that validates may fail in a store: keys given twice, control characters, lone
surrogates, bytes that are not UTF-8 and times outside the years 1900-9999 are malformed.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from entitlements.domain.rules import REGION_RULES
from entitlements.domain.times import now, parse_time, short_repr

Time = Annotated[datetime, BeforeValidator(parse_time)]
AccountId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
RegionCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
PartnerName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Plan = Literal["free", "pro", "business", "enterprise"]
PaidPlan = Literal["pro", "business", "enterprise"]
Channel = Literal["online", "direct", "partner"]
SalesChannel = Literal["direct", "partner"]
Rule = Literal[
    "registration_suspended",
    "free_hosting_suspended",
    "online_subscriptions_closed",
    "direct_sales_closed",
    "data_centre_isolated",
]
assert get_args(Rule) == REGION_RULES, "Rule must list rules.REGION_RULES, in order"
Jurisdiction = Annotated[str, StringConstraints(pattern=r"^([A-Z]{2}|platform)$")]
CommandId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]


#: Unicode categories refused in free text: controls, format characters (bidi overrides
#: such as U+202E, zero-width characters), surrogates, private use, unassigned, and line or
#: paragraph separators. They are invisible, or reorder what an auditor reads.
_INVISIBLE = {
    "Cc": "control",
    "Cf": "format",
    "Cs": "surrogate",
    "Co": "private use",
    "Cn": "unassigned",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}


def visible_text(value: str) -> str:
    """Text shown to auditors as it is (`actor`, `reason`): one rule for every free-text
    field, so nothing in it hides or reorders what is read (spaces of any kind are fine)."""
    for ch in value:
        kind = _INVISIBLE.get(unicodedata.category(ch))
        if kind is not None:
            raise ValueError(f"must be visible text (found U+{ord(ch):04X}, a {kind} character)")
    return value


Actor = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(visible_text)
]
Reason = Annotated[str, StringConstraints(max_length=2000), AfterValidator(visible_text)]


#: Validation context key: a `recorded_at` in the future is allowed (what-if only).
FUTURE_ALLOWED = "future_recorded_at"
_FUTURE = {FUTURE_ALLOWED: True}


class _Command(BaseModel):
    """Fields every command takes: when it takes effect, when the engine learned it, its
    identity (exactly once per `command_id`) and who asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_at: Time
    recorded_at: Time | None = None
    command_id: CommandId | None = None
    actor: Actor | None = None

    @field_validator("recorded_at")
    @classmethod
    def _not_in_future(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # what-if (FUTURE_ALLOWED in the context) may say what would be learned later
        if value is not None and value > now() and not (info.context or {}).get(FUTURE_ALLOWED):
            raise ValueError("recorded_at is in the future: the engine cannot have learned it yet")
        return value


class _OnAccount(_Command):
    """Commands that change one account: which one, and who asks (a region reaches only its
    own accounts; 'platform' reaches all)."""

    account_id: AccountId
    jurisdiction: Jurisdiction | None = None


class _WithPartner(_OnAccount):
    """Commands that name a channel: `partner` goes with channel `partner`, and only then.
    (Subclasses declare `partner` after `channel`, so the channel is validated first.)"""

    @field_validator("partner", check_fields=False)
    @classmethod
    def _partner_matches_channel(cls, value: str | None, info: ValidationInfo) -> str | None:
        channel = info.data.get("channel")
        if channel == "partner" and value is None:
            raise ValueError("partner is required with channel 'partner'")
        if channel is not None and channel != "partner" and value is not None:
            raise ValueError(f"partner is only given with channel 'partner', not {channel!r}")
        return value


class RegisterAccount(_WithPartner):
    command: Literal["register_account"]
    region: RegionCode
    plan: Plan
    channel: Channel
    partner: PartnerName | None = Field(default=None, validate_default=True)


class ApproveRegistration(_WithPartner):
    command: Literal["approve_registration"]
    plan: Literal["enterprise"] = "enterprise"
    channel: SalesChannel
    partner: PartnerName | None = Field(default=None, validate_default=True)


class OpenSubscription(_WithPartner):
    command: Literal["open_subscription"]
    plan: PaidPlan
    channel: Channel
    partner: PartnerName | None = Field(default=None, validate_default=True)


class CloseSubscription(_OnAccount):
    command: Literal["close_subscription"]
    reason: Reason | None = None


class RevokeHosting(_OnAccount):
    command: Literal["revoke_hosting"]
    reason: Reason


class RestoreHosting(_OnAccount):
    command: Literal["restore_hosting"]
    reason: Reason


class MoveToPartner(_OnAccount):
    command: Literal["move_to_partner"]
    partner: PartnerName


class SuspendAccount(_OnAccount):
    command: Literal["suspend_account"]
    jurisdiction: Jurisdiction  # required here: a suspension names who asks
    reason: Reason


class ReinstateAccount(_OnAccount):
    command: Literal["reinstate_account"]
    reason: Reason


def _distinct(codes: list[str]) -> list[str]:
    """A region listed twice is a mistake in the command, not a preference: refused."""
    twice = sorted({c for c in codes if codes.count(c) > 1})
    if twice:
        raise ValueError(f"a region is listed twice: {', '.join(twice)}")
    return codes


class ChooseDataRegions(_OnAccount):
    command: Literal["choose_data_regions"]
    regions: Annotated[
        list[RegionCode], Field(min_length=1, max_length=20), AfterValidator(_distinct)
    ]


class AuthorizePartner(_Command):
    command: Literal["authorize_partner"]
    region: RegionCode
    partner: PartnerName


class ApplyRegionRule(_Command):
    command: Literal["apply_region_rule"]
    region: RegionCode
    rule: Rule


class LiftRegionRule(_Command):
    command: Literal["lift_region_rule"]
    region: RegionCode
    rule: Rule


#: The commands that change one account (the engine loads or creates that account).
AccountCommand: TypeAlias = (
    RegisterAccount
    | ApproveRegistration
    | OpenSubscription
    | CloseSubscription
    | RevokeHosting
    | RestoreHosting
    | MoveToPartner
    | SuspendAccount
    | ReinstateAccount
    | ChooseDataRegions
)
#: The commands that change one region (its rules and partners).
RegionCommand: TypeAlias = AuthorizePartner | ApplyRegionRule | LiftRegionRule
#: Every command: what `parse_commands` returns and the engine matches on, exhaustively
#: (`typing.assert_never` in the last case). Also usable with isinstance().
Command: TypeAlias = AccountCommand | RegionCommand
COMMAND_NAMES: tuple[str, ...] = tuple(
    get_args(m.model_fields["command"].annotation)[0] for m in get_args(Command)
)
_adapter: TypeAdapter[Command] = TypeAdapter(Annotated[Command, Field(discriminator="command")])


class MalformedCommand(ValueError):
    """A command item that cannot be applied as written. Nothing in its batch is applied."""

    def __init__(self, item: int, field: str | None, message: str, label: str = "line") -> None:
        where = f"{label} {item}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")
        self.item, self.field, self.message, self.label = item, field, message, label


def _field_name(path: str) -> str:
    """A field path as an error names it: a key is the client's text, so escape and cut it."""
    text = repr(path)[1:-1]
    return text if len(text) <= 64 else text[:61] + "..."


def _first_error(error: ValidationError) -> tuple[str | None, str]:
    """The field and message of a pydantic error, without the union tag in the path."""
    e = error.errors(include_url=False)[0]
    loc = [_field_name(str(p)) for p in e["loc"]]
    if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "command", (
            f"unknown or missing command; expected one of {', '.join(COMMAND_NAMES)}"
        )
    if loc and loc[0] in COMMAND_NAMES:
        loc = loc[1:]
    message = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        message = "unknown field"
    return (".".join(loc) or None), message


def command_fingerprint(cmd: BaseModel) -> str:
    """What the command says, as a hash: the same `command_id` with another fingerprint is
    a different command. Fields left to their defaults do not count (a retry that lets
    `recorded_at` default is the same command)."""
    content = cmd.model_dump(mode="json", exclude={"command_id"}, exclude_none=True)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


AnyCommand = TypeVar("AnyCommand", bound=_Command)


def with_derived_id(cmd: AnyCommand) -> AnyCommand:
    """A command without `command_id` gets one derived from its content, so applying the
    same file again records nothing twice."""
    if cmd.command_id is not None:
        return cmd
    return cmd.model_copy(update={"command_id": "auto:" + command_fingerprint(cmd)[:40]})


#: C0, DEL and C1 controls (PostgreSQL refuses NUL; the rest break lines and logs), and
#: lone surrogates (no UTF-8 encoding for them).
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _unstorable_text(item: Mapping[Any, Any]) -> tuple[str, str] | None:
    """The first key or string anywhere in an item that a store cannot keep, as (field
    path, problem); bytes are refused too, as pydantic would decode them unchecked.
    Iterative, each container once: a deep or cyclic item cannot blow the stack."""
    stack: list[tuple[str, Any]] = [("", item)]
    seen: set[int] = set()
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            bad = _UNSTORABLE.search(value)
            if bad:
                kind = "lone surrogate" if bad[0] >= "\ud800" else "control character"
                return path, f"{kind} U+{ord(bad[0]):04X}"
        elif isinstance(value, bytes | bytearray):
            return path, "bytes where text is expected"
        elif isinstance(value, Mapping | list | tuple) and id(value) not in seen:
            seen.add(id(value))
            pairs = list(value.items() if isinstance(value, Mapping) else enumerate(value))
            for key, sub in reversed(pairs):
                sub_path = f"{path}.{key}" if path else str(key)
                stack.extend([(sub_path, sub), (sub_path, key)])  # the key is looked at first
    return None


def validated(
    numbered: Iterable[tuple[int, Any]], label: str = "line", future: bool = False
) -> Iterator[Command]:
    """Validate (number, item) pairs one at a time, as they come: holds none of them, so a
    file of any length streams through. Raises MalformedCommand for the first bad item;
    `recorded_at` may not go backwards (among items that give one), nor be in the future
    unless `future` (what-if: a command as if learned later)."""
    newest: datetime | None = None
    for n, item in numbered:
        if not isinstance(item, Mapping):
            raise MalformedCommand(n, None, "expected a JSON object", label)
        unstorable = _unstorable_text(item)
        if unstorable:
            raise MalformedCommand(n, _field_name(unstorable[0]), unstorable[1], label)
        try:
            cmd = _adapter.validate_python(item, context=_FUTURE if future else None)
        except ValidationError as e:
            field, message = _first_error(e)
            raise MalformedCommand(n, field, message, label) from None
        if cmd.recorded_at is not None:
            if newest is not None and cmd.recorded_at < newest:
                raise MalformedCommand(
                    n, "recorded_at", f"earlier than the recorded_at of an earlier {label}", label
                )
            newest = cmd.recorded_at
        yield cmd


def parse_commands(
    numbered: Iterable[tuple[int, Any]], label: str = "line", future: bool = False
) -> list[Command]:
    """Validate a whole batch of (number, item); raise MalformedCommand for the first bad
    item. `recorded_at` may not go backwards within a batch (among items that give one)."""
    return list(validated(numbered, label, future))


class UnreadableCommandFile(ValueError):
    """The command file cannot be read at all (missing, a directory, no permission)."""


class _KeyGivenTwice(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object hook: a key given twice is refused, not silently the last one."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _KeyGivenTwice(key)
        obj[key] = value
    return obj


def load_json(n: int, raw: bytes, label: str = "line") -> Any:
    """One JSON value (a command file's line, an HTTP body); every way it can fail is a
    MalformedCommand naming the line (or item) and, for a key given twice, the key. The
    one parser of what users send: a file and a request are refused alike."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedCommand(n, None, f"not UTF-8 (byte {e.start + 1})", label) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _KeyGivenTwice as e:
        raise MalformedCommand(n, _field_name(e.key), "key given twice", label) from None
    except json.JSONDecodeError as e:  # where, then what (its msg may end in " at")
        where = f"column {e.colno}" if label == "line" else f"line {e.lineno}, column {e.colno}"
        what = e.msg.removesuffix(" at")
        raise MalformedCommand(n, None, f"bad JSON at {where}: {what}", label) from None
    except RecursionError:
        raise MalformedCommand(n, None, "bad JSON: nested too deeply", label) from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise MalformedCommand(n, None, f"bad JSON: {str(e).split(':')[0]}", label) from None


def iter_command_file(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Read a JSON Lines command file as (line number, object), one line at a time; blank
    lines are skipped. Read as bytes, so a line that is not UTF-8 is refused by its number."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the last line
    except OSError as e:
        raise UnreadableCommandFile(
            f"cannot read {short_repr(str(path), 200)}: {e.strerror or e}"
        ) from None
    with f:
        for n, line in enumerate(f, start=1):
            raw = line[:-1] if line.endswith(b"\n") else line
            if raw.strip(b" \t\r"):
                yield n, load_json(n, raw)


def read_command_file(path: str | Path) -> list[tuple[int, Any]]:
    """A whole command file as (line number, object): for small files and tests."""
    return list(iter_command_file(path))


def check_command_file(path: str | Path) -> int:
    """`apply`'s first pass: validate every line, holding none (memory does not grow with
    the file), and return how many commands it holds. MalformedCommand names the first bad
    line and field; nothing has been applied, nor a store opened."""
    return sum(1 for _ in validated(iter_command_file(path)))


def stream_command_file(path: str | Path, future: bool = False) -> Iterator[tuple[int, Command]]:
    """`apply`'s second pass: (line number, command) pairs, validated again as they are
    read, each with its command_id (given, or derived from its content)."""
    items = iter_command_file(path)
    numbers: list[int] = []

    def numbered() -> Iterator[tuple[int, Any]]:
        for n, item in items:
            numbers.append(n)
            yield n, item

    for cmd in validated(numbered(), future=future):
        yield numbers.pop(), with_derived_id(cmd)


def parse_command_file(path: str | Path, future: bool = False) -> list[tuple[int, Command]]:
    """Read and validate a whole command file: (line number, command) pairs."""
    return list(stream_command_file(path, future))
