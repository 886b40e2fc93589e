"""Stored events keep explicit, stable topics, and old event versions are upcast on read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent

from entitlements.application.engine import Engine


def test_every_stored_event_has_an_explicit_topic(engine: Engine) -> None:
    engine.apply(
        [
            {
                "command": "apply_region_rule",
                "region": "CN",
                "rule": "free_hosting_suspended",
                "effective_at": "2020-01-01",
            },
            {
                "command": "register_account",
                "account_id": "a",
                "region": "CN",
                "plan": "free",
                "channel": "online",
                "effective_at": "2020-01-02",
            },
        ]
    )
    topics = {n.topic for n in engine.app.recorder.select_notifications(start=1, limit=100)}
    assert topics == {
        "entitlements:RegionOpened",
        "entitlements:RegionRuleApplied",
        "entitlements:AccountRegistered",
        "entitlements:HostingRevoked",
        "entitlements:CommandApplied",
        "entitlements:FanOutCompleted",
    }


class Gadget(Aggregate):
    """A test-only aggregate whose Renamed event gained `effective_at` in version 2."""

    class Renamed(Aggregate.Event):
        class_version = 2
        name: str
        effective_at: datetime

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["effective_at"] = datetime(1970, 1, 1, tzinfo=UTC)

    @event("Created")
    def __init__(self) -> None:
        self.name = ""

    @event(Renamed)
    def rename(self, name: str, effective_at: datetime) -> None:
        self.name, self.effective_at = name, effective_at


def store_a_gadget_renamed_in_version_1(engine: Engine) -> Gadget:
    """A Gadget created, then renamed, its Renamed event stored as a version-1 release of
    the code stored it (no effective_at)."""
    gadget = Gadget()
    gadget.rename(name="old", effective_at=datetime(2020, 1, 1, tzinfo=UTC))
    created, renamed = (engine.app.mapper.to_stored_event(e) for e in gadget.collect_events())
    state = engine.app.mapper.transcoder.decode(renamed.state)
    assert state.pop("class_version") == 2
    del state["effective_at"]
    v1 = StoredEvent(
        renamed.originator_id,
        renamed.originator_version,
        renamed.topic,
        engine.app.mapper.transcoder.encode(state),
    )
    engine.app.recorder.insert_events([created, v1])
    return gadget


def test_an_event_stored_in_an_older_version_is_upcast_when_read(engine: Engine) -> None:
    gadget = store_a_gadget_renamed_in_version_1(engine)
    restored: Any = engine.app.repository.get(gadget.id)
    assert (restored.name, restored.effective_at) == ("old", datetime(1970, 1, 1, tzinfo=UTC))
