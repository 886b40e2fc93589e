"""What-if: hypothetical commands applied to a copy of the history in memory, and every
answer they would change. Nothing is recorded in the store.

    answer = what_if(engine, parse_command_file(path, future=True), start=..., end=...)

The store's log is copied, record by record as stored, into a `memory://` engine, and each
hypothetical command is applied there *at its place in recorded time*: the log's records
recorded by its `recorded_at` are copied first (the log is in recorded order: the engine
never lets its clock go back), the command is decided by the engine's own handlers against
exactly those, as `apply` would have decided it then, and the rest of the log follows as it
was recorded (a new event never re-validates recorded ones). A command without
`recorded_at` comes after the whole log, as `apply` would take it now. A copied record of an
aggregate that a hypothetical event also changed moves up by as many versions (the events
keep their order; the stored state holds no version). Then, for every account a
hypothetical event touched, or in a region one touched, the answers of both histories are
compared by the domain's `answer_changes`, capability by capability.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from entitlements.application.command_book import CommandBook
from entitlements.application.engine import Engine
from entitlements.application.what_if_counts import WhatIfCounts, region_counts
from entitlements.domain.account import account_uuid
from entitlements.domain.answer_changes import AnswerChange, History, answer_changes, summary
from entitlements.domain.commands import Command
from entitlements.domain.decisions import CommandResult
from entitlements.domain.events import COMMAND_TOPICS
from entitlements.domain.region import region_id
from entitlements.domain.rules import Fact
from entitlements.domain.times import parse_when
from projections import snapshot
from projections.facts import TakesEvents
from projections.log_reader import read_log, read_stored

COPY_PAGE = 2000  # records copied into the memory store per insert


@dataclass
class WhatIfAnswer:
    """The results `apply` would print, and the answers that would change."""

    position: int  # the store's log position the copy was taken at
    results: list[CommandResult]
    changes: list[AnswerChange] = field(default_factory=list)
    counts: WhatIfCounts | None = None  # a region's daily counts in both, when asked

    def as_dict(self, label: str = "line") -> dict[str, Any]:
        return {
            "position": self.position,
            "results": [r.as_dict(label) for r in self.results],
            "changes": [c.as_dict() for c in self.changes],
            "summary": summary(self.changes),
        }


class _Copy:
    """The store's log copied into a memory engine up to a recorded time, at a time."""

    def __init__(self, source: Engine, target: Engine) -> None:
        self.source = source
        self.target = target
        self.head = source.position()
        self.copied = 0  # the source's position copied so far
        self.offsets: dict[UUID, int] = {}  # aggregate -> hypothetical events of it so far

    def _recorded_at(self, position: int) -> datetime | None:
        """The recorded_at of the first record at or after `position` that has one."""
        for page in read_stored(self.source.app, position - 1, self.head, page=8):
            for n in page:
                event: Any = self.source.app.mapper.to_domain_event(n)
                if getattr(event, "recorded_at", None) is not None:
                    return event.recorded_at  # type: ignore[no-any-return]
        return None

    def cut(self, recorded_at: datetime | None) -> int:
        """The last position recorded by `recorded_at` (None: the head). The log's
        recorded_at never decreases, so a bisection reads a few records only."""
        if recorded_at is None:
            return self.head
        lo, hi = self.copied, self.head  # the answer is in [lo, hi]
        while lo < hi:
            mid = (lo + hi + 1) // 2
            at = self._recorded_at(mid)
            if at is None or at <= recorded_at:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def copy_to(self, stop: int) -> None:
        """Copy the records after `copied` up to `stop`, versions moved up past ours, and
        take them in: the whole log before any hypothetical event takes the source's index
        as it is (a snapshot's round trip, no record decoded again); else they are read."""
        if stop <= self.copied:
            return
        whole = (  # nothing in the copy yet, hypothetical or copied
            self.target.log.position == 0 and stop == self.head == self.source.index.position
        )
        self._insert(stop)
        if whole:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "index"
                log = self.source.log
                snapshot.write_index(path, self.source.index, log, log.members, None, ".tmp")
                self.target.projector.adopt(snapshot.read_index(path)[0])
            self.target.books.adopt(_book(self.source, stop))  # the same positions
        else:
            self.target.catch_up()

    def _insert(self, stop: int) -> None:
        """The stored records after `copied` up to `stop`, as they are but for versions."""
        recorder: Any = self.target.app.recorder
        offsets = self.offsets
        for page in read_stored(self.source.app, self.copied, stop, page=COPY_PAGE):
            recorder.insert_events(
                [
                    StoredEvent(
                        n.originator_id,
                        n.originator_version + offsets.get(n.originator_id, 0),
                        n.topic,
                        n.state if type(n.state) is bytes else bytes(n.state),
                    )
                    for n in page
                ]
            )
        self.copied = stop

    def apply(self, n: int, cmd: Command, touched: set[UUID]) -> CommandResult:
        """Decide one command in the copy, where it falls in recorded time."""
        self.copy_to(self.cut(cmd.recorded_at))
        before = self.target.log.position
        (result,) = self.target.apply_parsed([(n, cmd)])
        self._ours(before, touched)
        return result

    def _ours(self, before: int, touched: set[UUID]) -> None:
        """The copy's records after `before` are hypothetical: count and name them."""
        for page in read_stored(self.target.app, before):
            for record in page:
                self.offsets[record.originator_id] = self.offsets.get(record.originator_id, 0) + 1
                if record.topic not in COMMAND_TOPICS:  # a command's record changes no answer
                    touched.add(record.originator_id)

    def reconcile(self, regions: Sequence[str], touched: set[UUID]) -> None:
        """Records were copied after hypothetical events, as they were recorded: a rule's
        fan-out recorded later never reached an account registered by a hypothetical
        command, nor took in a hypothetical plan change. The engine's own `reconcile`
        records, at the copy's newest time, the hosting events the rules still lack there."""
        before = self.target.log.position
        for code in regions:
            self.target.reconcile(code, actor="what-if")
        self._ours(before, touched)


def _book(source: Engine, head: int) -> CommandBook:
    """The source's command book to `head`, without giving the source one to keep (a
    process that only checks holds none, and would save it to a file at close): a copy of
    the one it holds, else its file's (if of this log) and the command records after it."""
    built = source.books.built
    if built is not None and built.position == head:
        return built.copy()
    book = source.books.load() or CommandBook()
    if book.position < head:
        for page in read_log(source.app, book.position, head, topics=COMMAND_TOPICS):
            book.take(page, page[-1][0])
    book.position = head
    return book


def window(
    start: datetime | str | None, end: datetime | str | None, known: datetime | str | None
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """The asked window and belief, parsed; a bad one is a ValueError naming the field."""
    s, e, k = parse_when("from", start), parse_when("to", end), parse_when("as_known_at", known)
    if s is not None and e is not None and e <= s:
        raise ValueError("to: not after from")
    return s, e, k


def _affected(touched: set[UUID], logs: Sequence[TakesEvents]) -> dict[str, str]:
    """The accounts a hypothetical event touched, and every account of a region one
    touched, in registration order, each with its region (as the first log has it). An
    account's aggregate id is derived from its name (account_uuid) only outside those
    regions, and only when some touched id is still unexplained."""
    regions = {code for log in logs for code in log.members if region_id(code) in touched}
    accounts = len(touched) > len(regions)
    seen: dict[str, str] = {}
    for log in logs:
        for code, members in log.members.items():
            if code in regions:
                for account_id in members:
                    seen.setdefault(account_id, code)
            elif accounts:
                for account_id in members:
                    if account_uuid(account_id) in touched:
                        seen.setdefault(account_id, code)
    return seen


def _history(
    log: TakesEvents, account_id: str, region: str, regions: dict[str, list[Fact]]
) -> History:
    """One account's facts and its region's (copied once per region: `regions`)."""
    if region not in regions:
        regions[region] = list(log.region_facts(region))
    return History(region, list(log.account_facts(account_id)), regions[region])


def what_if(
    source: Engine,
    commands: Sequence[tuple[int, Command]],
    start: datetime | None = None,
    end: datetime | None = None,
    known: datetime | None = None,
    counts: bool = False,
    counts_region: str | None = None,
) -> WhatIfAnswer:
    """Apply validated (number, command) pairs to an in-memory copy of `source`'s log, each
    at its recorded_at, and compare every touched account's answers over [start, end) as
    known at `known` (None: all on file, the hypothetical commands included). `counts`:
    also a region's daily counts in both histories (`counts_region`, else the one region the
    changes are in: what_if_counts.py; a ValueError naming the option when there is none)."""
    # The source's facts stand still at the copied position while the answer is made (a
    # server's follower waits; its checks do not).
    with source.projector.lock, Engine("memory://") as target:
        source.catch_up()
        target.saver.chain = False  # the copy is nobody's receipt: nothing to seal
        copy = _Copy(source, target)
        touched: set[UUID] = set()
        results = [copy.apply(n, cmd, touched) for n, cmd in commands]
        interleaved = copy.copied < copy.head and bool(copy.offsets)
        copy.copy_to(copy.head)
        if interleaved:
            copy.reconcile(
                sorted(set(_affected(touched, (source.log, target.log)).values())), touched
            )
        before, after = source.log, target.log
        changes: list[AnswerChange] = []
        regions: tuple[dict[str, list[Fact]], dict[str, list[Fact]]] = ({}, {})
        for account_id, region in _affected(touched, (before, after)).items():
            changes += answer_changes(
                account_id,
                _history(before, account_id, region, regions[0]),
                _history(after, account_id, region, regions[1]),
                start,
                end,
                known,
            )
        answer = WhatIfAnswer(copy.head, results, changes)
        if counts:
            answer.counts = region_counts(before, after, changes, counts_region, start, end, known)
        return answer
