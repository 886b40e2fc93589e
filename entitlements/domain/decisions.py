"""What a check answers, and what applying a command answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from entitlements.domain.rules import Fact, Verdict


class UnknownAccount(LookupError):
    """No event of this account was ever recorded."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"unknown account {shown_id(account_id)}")
        self.account_id = account_id


def shown_id(account_id: str, limit: int = 80) -> str:
    """An id as an error shows it: quoted, escaped, and cut with an ellipsis past `limit`
    characters (an id of 60 KB is not echoed whole into a log line or a 404)."""
    text = repr(account_id)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class PositionNotReached(TimeoutError):
    """Read-your-writes: the index did not reach the asked log position in time."""

    def __init__(self, wanted: int, current: int, timeout: float) -> None:
        super().__init__(
            f"the index is at log position {current}, not yet {wanted} (waited {timeout:g} s)"
        )
        self.wanted, self.current = wanted, current


class Decision(tuple):  # type: ignore[type-arg]
    """One capability of one account at (at, as_known_at), with the events that decided it.

    Immutable, small and cheap to make: a tuple (account_id, verdict, position, cite,
    context), where the verdict (capability, allowed, value, reason, because) is shared by
    every account the check index decided alike, so a decision costs one 5-tuple. `because`
    may be resolved when read: the index keeps no Fact per account, so it hands over what to
    cite, and `cite(refs, context, account_id)` builds the Facts. Two decisions are equal
    when every public attribute is (`because` as the Facts it resolves to)."""

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
        verdict = (capability, allowed, value, reason, because)
        return tuple.__new__(cls, (account_id, verdict, position, cite, context))

    @property
    def account_id(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def capability(self) -> str:
        return self[1][0]  # type: ignore[no-any-return]

    @property
    def allowed(self) -> bool:
        return self[1][1]  # type: ignore[no-any-return]

    @property
    def value(self) -> int | None:
        return self[1][2]  # type: ignore[no-any-return]

    @property
    def reason(self) -> str:
        return self[1][3]  # type: ignore[no-any-return]

    @property
    def position(self) -> int:
        """The log position the index had reached when this was decided."""
        return self[2]  # type: ignore[no-any-return]

    @property
    def because(self) -> tuple[Fact, ...]:
        """The deciding events; each reads like its JSON form: because[0]["type"]."""
        cite, refs = self[3], self[1][4]
        return refs if cite is None else cite(refs, self[4], self[0])  # type: ignore[no-any-return]

    def _key(self) -> tuple[Any, ...]:
        _, allowed, value, reason, _ = self[1]
        return (self[0], self[1][0], allowed, value, reason, self.because, self[2])

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
