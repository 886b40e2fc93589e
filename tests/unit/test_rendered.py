"""rendered.py: a decision's JSON is made once per decision object, never served stale."""

from __future__ import annotations

from entitlements.domain.decisions import Decision
from entitlements.http.rendered import Rendered
from entitlements.http.schemas import decision_json


def decision(account: str, allowed: bool, position: int = 7) -> Decision:
    return Decision(account, "host", allowed, None, "why", (), position)


def test_the_same_decision_is_rendered_once_and_a_new_one_again() -> None:
    rendered = Rendered(size=4)
    first = decision("a", True)
    body = rendered.json(first)
    assert body == decision_json(first)
    assert rendered.json(first) is body  # made once
    changed = decision("a", False, 8)  # the index's next answer: a new object
    assert rendered.json(changed) == decision_json(changed) != body
    equal = decision("a", True)  # equal, but another object: rendered, not looked up
    assert rendered.json(equal) == body and rendered.json(equal) is not body


def test_when_full_the_older_half_goes() -> None:
    rendered = Rendered(size=4)
    kept = [decision(f"a-{i}", True) for i in range(5)]
    bodies = [rendered.json(d) for d in kept]  # the fifth makes room: a-0 and a-1 go
    assert len(rendered._kept) == 3
    assert all(rendered.json(kept[i]) is bodies[i] for i in (2, 3, 4))
    assert rendered.json(kept[0]) is not bodies[0]  # made again
