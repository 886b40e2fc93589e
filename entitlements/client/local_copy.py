"""The client's own copy of the check index: the same CheckIndex and LightLog a server
worker keeps, started from a snapshot and moved on by the stream's records, each checked
against the integrity chain before it is applied (issue 19).

A snapshot names its position and the chain's head hash there (`head.chain`, written by
`snapshot export` and GET /v1/snapshot); each record names the hash it links to and its
own (`state.chain`). A record is applied only when it is the next one (a position past
ours), links to our head, and its content hashes to the link it claims, as `audit verify`
recomputes it; anything else is refused, not applied. Nothing here reads a store: an
account's stream is named from its id (`account_uuid`), and a record's state is decoded
by the library's JSON transcoder (types marked, no code), its topic one of ours.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)

from entitlements.adapters.integrity import content, link
from entitlements.domain import account, command_log, region  # noqa: F401 - their topics
from entitlements.domain import events as names
from entitlements.domain.account import account_uuid
from entitlements.domain.region import region_id
from projections.changes import ChangeFeed
from projections.check_index import CheckIndex
from projections.facts import Changed
from projections.snapshot import SnapshotRefused, read_index

#: The topics a record may have: our events' (any other would make the library import
#: whatever module the topic names).
TOPICS = frozenset(
    names.topic(getattr(names, n))
    for n in dir(names)
    if n.isupper() and isinstance(getattr(names, n), str) and n != "TOPIC_PREFIX"
)


FEED_KEPT = 16  # positions whose changes the copy keeps: `on_change` takes them at once


class Refused(ValueError):
    """A snapshot or a record that does not verify: it is not applied."""


def transcoder() -> JSONTranscoder:
    """The store application's transcoder (eventsourcing's JSON, with its three types)."""
    t = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        t.register(transcoding)
    return t


class LocalCopy:
    """A check index level with the log up to `position`, whose chain hash is `head`."""

    def __init__(
        self, path: Path, expected: dict[str, Any] | None = None, feed: bool = False
    ) -> None:
        """Load the snapshot at `path`; `expected` (position, chain_head, digest, as the
        server said) must match what the file holds, else Refused. With `feed`, keep the
        capability changes each record makes (`changes_at`), as a server's change feed."""
        try:
            loaded, head = read_index(path)
        except SnapshotRefused as e:
            raise Refused(f"snapshot: {e}") from None
        chain = head.get("chain") if isinstance(head, dict) else None
        if not isinstance(chain, str):
            raise Refused("snapshot: no chain head in its header (write it with snapshot export)")
        found = {"position": loaded.position, "chain_head": chain, "digest": loaded.digest}
        for key, value in (expected or {}).items():
            if value is not None and found[key] != value:
                raise Refused(f"snapshot: its {key} is {found[key]}, the server said {value}")
        self.index = CheckIndex()
        self.log = loaded.into(self.index, self._resolve)
        self.head = chain
        self.lock = threading.Lock()  # one writer: the follow thread (and tests)
        self._mapper: Mapper[UUID] = Mapper(transcoder())
        self._streams: dict[int, tuple[str, str]] | None = None
        self.feed = ChangeFeed(loaded.position, keep=FEED_KEPT) if feed else None

    @property
    def position(self) -> int:
        return self.log.position

    def apply(self, record: Any) -> Changed | None:
        """Check `record` and apply it; None when it is at or before our position (had
        already: skipped, never applied twice). Refused when it does not verify."""
        position = record.get("position") if isinstance(record, dict) else None
        if type(position) is not int:
            raise Refused("record: no position")
        with self.lock:
            if position <= self.position:
                return None
            event, chain = self._verified(position, record)
            if self.feed is None:
                changed = self.log.add([(position, event)])
            else:
                changed = self.feed.take(self.log, position, event)
            self.index.update(self.log, changed)
            self.log.compact(changed.accounts)
            self.head = chain
            return changed

    def changes_at(self, position: int) -> list[dict[str, Any]]:
        """The capability changes the record at `position` made (the items /v1/changes
        lists for it), when kept (`feed`) and it is the newest applied."""
        found = None if self.feed is None else self.feed.read(position - 1, 1 << 30)
        return [] if found is None else [i for i in found[0] if i["position"] == position]

    def _verified(self, position: int, record: dict[str, Any]) -> tuple[Any, str]:
        """The record's event and chain hash, once its link to our head is recomputed."""
        try:
            stream, version = UUID(record["stream"]), record["version"]
            topic, text = record["topic"], record["state"]
            if topic not in TOPICS or type(version) is not int:
                raise ValueError(f"topic {topic!r}" if topic not in TOPICS else "version")
            raw = text.encode()
            state = self._mapper.transcoder.decode(raw)
            chain = state["chain"]
            prev, claimed = chain["prev"], chain["hash"]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise Refused(f"record {position}: not a record ({type(e).__name__}: {e})") from None
        if prev != self.head:
            raise Refused(f"record {position}: links to {prev}, not to our head {self.head}")
        if link(prev, content(stream, version, topic, state)) != claimed:
            raise Refused(f"record {position}: its content does not hash to its chain link")
        event = self._mapper.to_domain_event(StoredEvent(stream, version, topic, raw))
        return event, claimed

    def _resolve(self, originator_id: Any) -> tuple[str, str] | None:
        """Which stream an aggregate of the snapshot is, from the names it holds (the
        server asks its store; a copy derives every id from its name, once)."""
        if self._streams is None:
            streams = {account_uuid(a).int: ("account", a) for a in self.index.accounts}
            streams.update({region_id(c).int: ("region", c) for c in self.log.regions})
            self._streams = streams
        return self._streams.get(originator_id.int)
