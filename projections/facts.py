"""The log, read into facts: per account and per region, in effective order.

Every projection starts here. `LogFacts.add` takes decoded events in log order (from a
catch-up, a follow loop or a rebuild) and says which streams changed, so a projection
recomputes only those.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from entitlements.rules import WHO_FIELDS, Fact

#: Event attributes that are not part of a fact's data.
_ENVELOPE = frozenset(
    {
        "originator_id",
        "originator_version",
        "originator_topic",
        "timestamp",
        "effective_at",
        "recorded_at",
        "cause",
        "account_id",
    }
)


def fact_from_event(stream: str, event: Any) -> Fact:
    """The Fact an aggregate remembers for this event (see Account._remember)."""
    state = vars(event)
    return Fact(
        stream,
        type(event).__name__,
        event.originator_version,
        event.effective_at,
        event.recorded_at,
        {
            k: v
            for k, v in state.items()
            if k not in _ENVELOPE and not (k in WHO_FIELDS and v is None)
        },
        state.get("cause"),
    )


class CommandOutcome(NamedTuple):
    """What became of a command, kept under its command_id: a repeat gets this back."""

    command: str
    fingerprint: str
    status: str  # "applied" | "rejected"
    reason: str | None
    position: int  # the log position its result reported (after a fan-out: the fan-out's end)


#: Command records (entitlements.command_log): who asked for what, and how it ended.
COMMAND_RECORDS = frozenset({"CommandApplied", "CommandRejected", "FanOutCompleted"})


@dataclass
class Changed:
    """Streams touched by a batch of events."""

    accounts: set[str] = field(default_factory=set)
    regions: set[str] = field(default_factory=set)


class LogFacts:
    """Facts of every account and region, as far as `position` in the log."""

    newest_recorded_at: datetime | None = None  # the store's clock: never decreases

    def __init__(self) -> None:
        self.position = 0
        self.accounts: dict[str, list[Fact]] = {}
        self.regions: dict[str, list[Fact]] = {}
        self.region_of: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}  # region -> its accounts, in registration order
        # aggregate id (as its 128-bit int: cheap to keep in a snapshot) -> (kind, name)
        self.stream_of: dict[int, tuple[str, str]] = {}
        # The command log, as the writer needs it: outcomes by command_id, the rejections
        # in log order, and hosting fan-outs recorded but not finished (command_id ->
        # (region, actor)), which the next writer finishes.
        self.commands: dict[str, CommandOutcome] = {}
        self.rejections: list[Fact] = []
        self.pending_fan_outs: dict[str, tuple[str, str | None]] = {}

    def add(self, events: Iterable[tuple[int, Any]], changed: Changed | None = None) -> Changed:
        """Take (position, decoded event) pairs in log order; skip positions already seen."""
        changed = changed or Changed()
        for position, event in events:
            if position <= self.position:
                continue
            self.position = position
            if event.recorded_at is not None and (
                self.newest_recorded_at is None or event.recorded_at > self.newest_recorded_at
            ):
                self.newest_recorded_at = event.recorded_at
            kind, name = self._stream(event)
            if kind == "command":
                self._add_command_record(position, event)
                continue
            if kind == "account":
                facts = self.accounts.setdefault(name, [])
                changed.accounts.add(name)
            else:
                facts = self.regions.setdefault(name, [])
                changed.regions.add(name)
            fact = fact_from_event(f"{kind}:{name}", event)
            bisect.insort(facts, fact, key=lambda f: f.order)
        return changed

    def _add_command_record(self, position: int, event: Any) -> None:
        kind = type(event).__name__
        if kind == "FanOutCompleted":
            command_id = self.stream_of[event.originator_id.int][1]
            self.pending_fan_outs.pop(command_id, None)
            self.commands[command_id] = self.commands[command_id]._replace(position=position)
            return
        if kind == "CommandApplied":
            outcome = CommandOutcome(event.command, event.fingerprint, "applied", None, position)
            if event.fan_out:
                self.pending_fan_outs[event.command_id] = (event.region, event.actor)
        else:
            outcome = CommandOutcome(
                event.command, event.fingerprint, "rejected", event.reason, position
            )
            self.rejections.append(
                Fact(
                    f"command:{event.command_id}",
                    kind,
                    1,
                    event.effective_at,
                    event.recorded_at,
                    {
                        "position": position,
                        "command_id": event.command_id,
                        "command": event.command,
                        "actor": event.actor,
                        "account_id": event.account_id,
                        "region": event.region,
                        "reason": event.reason,
                        "request": event.request,
                    },
                )
            )
            if event.conflict:  # the id stays with the command that first used it
                return
        self.commands[event.command_id] = outcome

    def holds(self, event: Any) -> bool:
        """Whether the log (as read so far) holds this very event: same stream, version,
        type and recorded_at. Tells a commit whose acknowledgement was lost from a conflict."""
        stream = self.stream_of.get(event.originator_id.int)
        if stream is None:
            return False
        if stream[0] == "command":  # our record is on file: same command, fan-out finished
            outcome = self.commands.get(stream[1])
            if type(event).__name__ == "FanOutCompleted":
                return outcome is not None and stream[1] not in self.pending_fan_outs
            return outcome is not None and outcome.fingerprint == event.fingerprint
        facts = (self.accounts if stream[0] == "account" else self.regions).get(stream[1], ())
        return any(
            f.version == event.originator_version
            and f.type == type(event).__name__
            and f.recorded_at == event.recorded_at
            for f in facts
        )

    def region_facts(self, code: str) -> list[Fact]:
        return self.regions.get(code, [])

    def _stream(self, event: Any) -> tuple[str, str]:
        try:
            return self.stream_of[event.originator_id.int]
        except KeyError:
            pass
        topic_name = type(event).__name__
        if topic_name == "AccountRegistered":
            stream = ("account", event.account_id)
            self.region_of[event.account_id] = event.region
            self.members.setdefault(event.region, []).append(event.account_id)
        elif topic_name == "RegionOpened":
            stream = ("region", event.region)
        elif topic_name in COMMAND_RECORDS:
            stream = ("command", event.command_id)
        else:
            raise ValueError(f"event {topic_name} v{event.originator_version} of an unknown stream")
        self.stream_of[event.originator_id.int] = stream
        return stream
