"""Server-Sent Events read from lines (the WHATWG rules the client needs): `id:`, `event:`,
`data:` (lines joined), comments ignored, an event dispatched at a blank line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    id: str | None
    kind: str
    data: str


def events(lines: Iterable[str]) -> Iterator[Event]:
    """The events in `lines` (each without its line break), in order."""
    event_id: str | None = None
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield Event(event_id, kind, "\n".join(data))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            kind = value
        elif field == "id":
            event_id = value
