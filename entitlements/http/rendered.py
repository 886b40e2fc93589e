"""The JSON of the decisions answered last, made once each.

A "now" decision is one object per account and capability for as long as the answer holds
(the check index keeps it until the account, its region or the clock changes it), and
turning it into JSON (its `because` events rebuilt from the index, two times formatted
each) costs twenty times the check. So the worker keeps the bytes of the last `size`
decisions it rendered, by the decision object itself: a new answer is a new object, never a
stale hit. Used on the event loop only (one thread: no lock).
"""

from __future__ import annotations

from entitlements.decisions import Decision
from entitlements.http.schemas import decision_json

SIZE = 1 << 14  # decisions whose JSON is kept (the oldest made goes first): a few MB


class Rendered:
    """Decision -> the bytes of `schemas.decision_json(decision)`, for "now" answers."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._kept: dict[int, tuple[Decision, bytes]] = {}

    def json(self, decision: Decision) -> bytes:
        kept = self._kept.get(id(decision))
        if kept is not None and kept[0] is decision:
            return kept[1]
        body = decision_json(decision)
        if len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]
        self._kept[id(decision)] = (decision, body)  # holding it: its id is not reused
        return body
