"""The JSON of the decisions answered last, made once each.

A "now" decision is one object per account and capability for as long as the answer holds
(the check index keeps it until the account, its region or the clock changes it), and
turning it into JSON (its `because` events rebuilt from the index, two times formatted
each) costs twenty times the check. So the worker keeps the bytes of the last `size`
decisions it rendered, by the decision object itself: a new answer is a new object, never a
stale hit. Used on the event loop only (one thread: no lock).
"""

from __future__ import annotations

from itertools import islice

from entitlements.domain.decisions import Decision
from entitlements.http.schemas import decision_json

SIZE = 1 << 14  # decisions whose JSON is kept at most (the older half goes when full)


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
        if len(self._kept) >= self.size:  # keep the newer half (deleting the oldest one at
            # a time leaves a dict whose first key is found past every deleted slot)
            self._kept = dict(islice(self._kept.items(), self.size // 2, None))
        self._kept[id(decision)] = (decision, body)  # holding it: its id is not reused
        return body
