"""What a check answers, and what applying a command answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entitlements.rules import Fact, Verdict


class UnknownAccount(LookupError):
    """No event of this account was ever recorded."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown account {account_id!r}")
        self.account_id = account_id


class PositionNotReached(TimeoutError):
    """Read-your-writes: the index did not reach the asked log position in time."""

    def __init__(self, wanted: int, current: int, timeout: float) -> None:
        super().__init__(
            f"the index is at log position {current}, not yet {wanted} (waited {timeout:g} s)"
        )
        self.wanted, self.current = wanted, current


@dataclass(frozen=True, slots=True)
class Decision:
    """One capability of one account at (at, as_known_at), with the events that decided it."""

    account_id: str
    capability: str
    allowed: bool
    value: int | None
    reason: str
    because: tuple[Fact, ...]  # each reads like its JSON form: because[0]["type"]
    position: int  # the log position the index had reached when this was decided

    @classmethod
    def of(cls, account_id: str, capability: str, verdict: Verdict, position: int) -> Decision:
        return cls(
            account_id,
            capability,
            verdict.allowed,
            verdict.value,
            verdict.reason,
            verdict.because,
            position,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "capability": self.capability,
            "allowed": self.allowed,
            "value": self.value,
            "reason": self.reason,
            "because": [f.as_dict() for f in self.because],
            "position": self.position,
        }


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of one command: applied, or rejected with the reason."""

    item: int
    command: str
    status: str  # "applied" | "rejected"
    reason: str | None
    position: int | None  # the log position reached after this command
    command_id: str | None = None
    duplicate: bool = False  # already on file: this is the original result, nothing was recorded

    def as_dict(self, label: str = "line") -> dict[str, Any]:
        result = {
            label: self.item,
            "command_id": self.command_id,
            "command": self.command,
            "status": self.status,
            "reason": self.reason,
            "position": self.position,
        }
        if self.duplicate:
            result["duplicate"] = True
        return result
