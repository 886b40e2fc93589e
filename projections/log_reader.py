"""The one way projections read the log: pages of (position, decoded event), in log order.

Every reader here (the projector's catch-up, the SQL read models, a rebuild, the change
feed's history) goes through `read_log`, so paging, stopping and decoding live in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from eventsourcing.application import Application

PAGE = 1000  # events per select (raw SQLite reads peak around 1000 rows per select)

#: A decoded event and its position in the log (the store's notification id).
Positioned = tuple[int, Any]


def read_log(
    app: Application[Any],
    after: int,
    stop: int | None = None,
    page: int | None = None,
    topics: frozenset[str] | None = None,
) -> Iterator[list[Positioned]]:
    """Pages of the log after position `after`, up to `stop` (None: the current end), each
    a list of (position, decoded event). With `topics`, only those topics are decoded and
    kept."""
    page = page or PAGE  # read when called: a test may lower it
    start = after + 1
    while stop is None or start <= stop:
        notifications = app.recorder.select_notifications(
            start=start, limit=page, stop=stop, topics=tuple(topics) if topics else ()
        )
        if not notifications:
            return
        yield [(n.id, app.mapper.to_domain_event(n)) for n in notifications]
        if len(notifications) < page:
            return
        start = notifications[-1].id + 1
