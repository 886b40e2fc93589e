"""The application service, a facade wiring its parts: apply commands (group_commit.py:
decided by handlers.py on aggregates.py's aggregates, saved sealed by sealing.py), fan out
region rules (fan_out.py), answer checks, history and capabilities (queries.py).

    engine = open_engine("sqlite:///entitlements.db")
    engine.apply([{"command": "register_account", ...}])
    engine.check("cn-free-01", "host", at="2020-05-19")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from entitlements.adapters.store import (
    WriterLock,
    create_tables,
    eventsourcing_env,
    first_session,
    is_memory,
    store_url,
)
from entitlements.application.aggregates import Aggregates
from entitlements.application.command_book import CommandBook
from entitlements.application.command_book_file import CommandBooks
from entitlements.application.fan_out import FanOut
from entitlements.application.group_commit import GroupCommit
from entitlements.application.handlers import Handlers
from entitlements.application.queries import Queries
from entitlements.application.sealing import Saver
from entitlements.application.store_app import (
    EntitlementsApplication as EntitlementsApplication,  # re-exported: benchmarks use it
)
from entitlements.domain.commands import Command, parse_commands
from entitlements.domain.decisions import CommandResult
from projections.check_index import CheckIndex
from projections.facts import LogFacts, TakesEvents
from projections.follower import FollowStatus as FollowStatus  # re-exported: the doors read it
from projections.light_log import LightLog
from projections.projector import Projector

WRITER_WAIT = 300.0  # seconds a command waits for the writer lock (a 1M-account fan-out: ~1 min)


class Engine:
    """Apply commands to the log and answer what each account may do."""

    def __init__(
        self, url: str | None = None, *, start: bool = True, must_exist: bool = False
    ) -> None:
        """Open the store at `url` (see store.store_url); `must_exist` refuses to create an
        SQLite file (a read on a typo'd path). A server that refuses us says why, at once."""
        self.url = store_url(url)
        # PostgreSQL: the connection that checked the server is the writer lock's session
        self.writer = WriterLock(
            self.url, timeout=WRITER_WAIT, session=first_session(self.url, must_exist)
        )
        # Tables are created under the writer lock: two processes opening a new PostgreSQL
        # store at once would otherwise race in the catalog ("tuple concurrently updated").
        self.app = EntitlementsApplication(env={**eventsourcing_env(self.url), "CREATE_TABLE": "n"})
        with self.writer:
            create_tables(self.url, self.app.recorder)
        # memory://: no snapshot file, no command book file (nothing outlives the process)
        self.projector = Projector(self.app, None if is_memory(self.url) else self.url)
        self.index: CheckIndex = self.projector.index
        self.books = CommandBooks(self.app, self.projector)
        self.saver = Saver(self.app, self.projector)
        self.aggregates = Aggregates(self.app, self.projector)
        self.queries = Queries(self.app, self.projector)
        # The hot path in process: `engine.check` is the queries' own method (see its doc),
        # with no call of the facade's in between (a frame is a fifth of a check's time).
        self.check = self.queries.check
        # The questions, answered by the queries' own methods (see queries.py).
        self.capabilities = self.queries.capabilities
        self.history = self.queries.history
        self.changes = self.queries.changes
        self.rejections = self.queries.rejections
        self.position = self.queries.position
        self.fan_outs = FanOut(self.projector, self.writer, self.saver, self.aggregates, self.books)
        # A region's hosting rule on its accounts, and any fan-out left unfinished (fan_out.py).
        self.fan_out = self.fan_outs.fan_out
        self.reconcile = self.fan_outs.reconcile
        handlers = Handlers(self.app, self.projector, self.aggregates, self.books)
        parts = (handlers, self.saver, self.aggregates, self.fan_outs, self.books)
        self.group_commit = GroupCommit(self.app, self.projector, self.writer, parts)
        if start:
            self.projector.start()

    @property
    def log(self) -> TakesEvents:
        """The log as this process holds it, level with the store under the writer lock:
        what commands and fan-outs are decided with (a LightLog: no Fact per account; an
        account's facts are read back from the check index when a command needs them)."""
        return self.projector.log

    @property
    def facts(self) -> LogFacts:
        """Every account's facts at once, for tests and tools (built from the index when the
        process keeps none: a copy, it does not follow the log). The writer never needs it."""
        log = self.projector.log
        return log.materialize() if isinstance(log, LightLog) else log

    @property
    def book(self) -> CommandBook:
        """The writer's memory of the command log (see command_book_file.py)."""
        return self.books.book

    def close(self) -> None:
        self.projector.stop()
        self.books.save()
        self.writer.close()
        self.app.close()

    def catch_up(self) -> int:
        """Bring this process's index level with the log; returns events read."""
        return self.projector.catch_up()

    def follow(
        self,
        interval: float = 0.05,
        on_advance: Callable[[int], None] | None = None,
        on_status: Callable[[FollowStatus], None] | None = None,
    ) -> None:
        """Keep the index level with the log in a background thread (LISTEN/NOTIFY on
        PostgreSQL, polling every `interval` s on SQLite) that outlives store errors;
        `on_advance(position)` is told, from that thread, each time the index moved on,
        and `on_status(status)` each time following changed state (lost the store, back)."""
        if on_advance is not None:
            self.projector.on_advance.append(on_advance)
        if on_status is not None:
            self.projector.on_status.append(on_status)
        self.projector.follow(interval)

    def follower_status(self) -> FollowStatus:
        """How following the log goes (state, position, stale_since, ...): cheap, any thread."""
        return self.projector.status

    def wait_for(self, position: int, timeout: float | None = None) -> None:
        """Read your writes: return once the index has reached `position`."""
        self.queries.wait_for(position, timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(self, commands: Iterable[Mapping[str, Any]]) -> list[CommandResult]:
        """Validate the whole batch (MalformedCommand names item and field; nothing is
        applied), then apply each command; a domain rejection is a result, not an error."""
        return self.apply_parsed(list(enumerate(parse_commands(enumerate(commands, 1), "item"), 1)))

    def apply_parsed(self, numbered: Sequence[tuple[int, Command]]) -> list[CommandResult]:
        """Apply already validated commands, in order; see `apply_iter`."""
        return list(self.apply_iter(numbered))

    def apply_iter(self, numbered: Iterable[tuple[int, Command]]) -> Iterator[CommandResult]:
        """Apply validated commands in order, yielding each result once the transaction
        holding it has committed (so a result shown was applied). Group commit: up to
        GROUP_MAX commands share one transaction, each deciding against what the earlier
        ones of its group decided; a group that fails to save is applied again one
        command per transaction, so one bad command loses no other. Runs under the
        store's writer lock, in spans of at most LOCK_SPAN seconds with a catch-up (and
        any unfinished fan-out finished) at the start of each span, so other writers get
        their turn. The index has caught up when the iteration ends. `numbered` is read
        as it is needed (a file streams through: only a group is held at a time)."""
        return self.group_commit.apply_iter(numbered)


def open_engine(url: str | None = None) -> Engine:
    """Open the engine on a store URL (None: $ENTITLEMENTS_DB, else ./entitlements.db)."""
    return Engine(url)
