"""What a check answers, and what applying a command answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
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


class Decision(tuple):  # type: ignore[type-arg]
    """One capability of one account at (at, as_known_at), with the events that decided it.

    Immutable, and cheap to make (a tuple underneath: the check index makes one per `at`
    check). `because` may be resolved when read: the check index keeps no Fact per account,
    so it hands over what to cite, `cite(refs, context, account_id)` builds the Facts. Two decisions
    are equal when every public attribute is (`because` as the Facts it resolves to)."""

    __slots__ = ()

    def __new__(
        cls,
        account_id: str,
        capability: str,
        allowed: bool,
        value: int | None,
        reason: str,
        because: Any,
        position: int,
        cite: Callable[[Any, Any, str], tuple[Fact, ...]] | None = None,
        context: Any = None,
    ) -> Decision:
        return tuple.__new__(
            cls, (account_id, capability, allowed, value, reason, because, position, cite, context)
        )

    account_id: str = property(itemgetter(0))  # type: ignore[assignment]
    capability: str = property(itemgetter(1))  # type: ignore[assignment]
    allowed: bool = property(itemgetter(2))  # type: ignore[assignment]
    value: int | None = property(itemgetter(3))  # type: ignore[assignment]
    reason: str = property(itemgetter(4))  # type: ignore[assignment]
    #: the log position the index had reached when this was decided
    position: int = property(itemgetter(6))  # type: ignore[assignment]

    @property
    def because(self) -> tuple[Fact, ...]:
        """The deciding events; each reads like its JSON form: because[0]["type"]."""
        cite = self[7]
        return self[5] if cite is None else cite(self[5], self[8], self[0])  # type: ignore[no-any-return]

    def _key(self) -> tuple[Any, ...]:
        return (*self[:5], self.because, self[6])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return self is other or self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        names = ("account_id", "capability", "allowed", "value", "reason", "because", "position")
        return (
            f"Decision({', '.join(f'{n}={v!r}' for n, v in zip(names, self._key(), strict=True))})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Decision, self._key())

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
