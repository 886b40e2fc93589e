"""`verify`: the integrity chain (entitlements/adapters/integrity.py) recomputed over the
whole log, read in pages by the one pager (projections/log_reader.py). A row the store's
library cannot even list is told apart by bisection and reported as damage, never a crash."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import PersistenceError

from entitlements.adapters.integrity import (
    LOOKAHEAD,
    ChainWalk,
    Unreadable,
    Verification,
    one_line,
    row_of,
)
from projections.log_reader import read_stored

PAGE = 1000  # notifications per select while verifying


def verify(
    app: Application[Any],
    receipt: tuple[str, int] | None = None,
    tally: Callable[[Any], None] | None = None,
) -> Verification:
    """Walk the whole log recomputing the chain. The first break is reported with its
    position and kind; a receipt (hash, position) must equal the chain recomputed there.
    `tally` is given every row walked, as read (`migrate` digests them), up to the break."""
    walk = ChainWalk(receipt)
    rows = _notifications(app, 0)
    for n in rows:
        walk.passed(n.id)
        if tally is not None:
            tally(n)
        row = row_of(app, n)
        if not walk.step(row):
            ahead = [row_of(app, m) for _, m in zip(range(LOOKAHEAD), rows, strict=False)]
            return walk.broken(row, ahead)
    return walk.end()


def _notifications(app: Application[Any], after: int) -> Iterator[Any]:
    """The log's rows in order from `after + 1`; a row that cannot be listed is yielded as
    Unreadable at its position, and the walk goes on past it."""
    start = after + 1
    while True:
        try:
            for page in read_stored(app, start - 1, page=PAGE):
                yield from page
                start = page[-1].id + 1
            return
        except PersistenceError:
            raise
        except Exception as e:  # noqa: BLE001 - a row's content broke the library's reading
            bad = _first_unreadable(app, start, e)
            for page in read_stored(app, start - 1, stop=bad - 1, page=PAGE):
                yield from page
            yield Unreadable(bad, f"cannot be read ({one_line(e)})")
            start = bad + 1


def _first_unreadable(app: Application[Any], start: int, error: Exception) -> int:
    """The position of the first row from `start` that the library fails to read (a
    bisection over `stop`); re-raises `error` when no row fails (then it was not a row's)."""
    recorder = app.recorder

    def fails(stop: int) -> bool:
        try:
            recorder.select_notifications(start=start, limit=PAGE, stop=stop)
        except PersistenceError:
            raise
        except Exception:  # noqa: BLE001 - as in _notifications
            return True
        return False

    lo, hi = start, recorder.max_notification_id() or start
    if not fails(hi):
        raise error
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
