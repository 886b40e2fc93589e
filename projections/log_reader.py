"""The one way projections read the log: pages of (position, decoded event), in log order.

Every reader of the log in pages (the projector's catch-up, the SQL read models, a rebuild,
the change feed's history, the auditors' walks, `verify`) goes through `read_stored` (as
stored) or `read_log` (decoded), so paging, stopping and decoding live in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from eventsourcing.application import Application

PAGE = 1000  # events per select (raw SQLite reads peak around 1000 rows per select)

#: A decoded event and its position in the log (the store's notification id).
Positioned = tuple[int, Any]


def read_stored(
    app: Application[Any],
    after: int,
    stop: int | None = None,
    page: int | None = None,
    topics: frozenset[str] | None = None,
) -> Iterator[Sequence[Any]]:
    """Pages of the log's notifications after position `after`, up to `stop` (None: the
    current end), as stored (not decoded: a reader that skips most of them, or checks the
    stored bytes, decodes none). With `topics`, only those topics. The one pager."""
    page = page or PAGE  # read when called: a test may lower it
    start = after + 1
    while stop is None or start <= stop:
        notifications = app.recorder.select_notifications(
            start=start, limit=page, stop=stop, topics=tuple(topics) if topics else ()
        )
        if not notifications:
            return
        yield notifications
        if len(notifications) < page:
            return
        start = notifications[-1].id + 1


def read_log(
    app: Application[Any],
    after: int,
    stop: int | None = None,
    topics: frozenset[str] | None = None,
) -> Iterator[list[Positioned]]:
    """`read_stored`'s pages (of PAGE), each a list of (position, decoded event): after
    position `after`, up to `stop` (None: the current end); with `topics`, only those
    topics are decoded and kept."""
    for notifications in read_stored(app, after, stop, topics=topics):
        yield [(n.id, app.mapper.to_domain_event(n)) for n in notifications]
