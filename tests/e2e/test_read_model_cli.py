"""`entitlements rebuild` and `catch-up` through the installed console script: their bars
on stderr count the log's events exactly (issue 17: 64/64 for 56, the accounts added in),
a resumed rebuild says so, and a catch-up with nothing new reads and shows nothing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from entitlements.application.engine import Engine
from projections.sql_views import SqlReadModel
from tests.e2e.test_cli import run
from tests.integration.test_read_models import apply_scenario

LATE = {
    "command": "register_account",
    "account_id": "late",
    "region": "US",
    "plan": "pro",
    "channel": "online",
    "effective_at": "2021-01-01",
}


def bars(stderr: str, label: str) -> list[str]:
    """What each bar says past its bar, without its rate: `56/56 events`."""
    found = re.findall(rf"^{label} ━+ (.*?)(?:\s+[\d,]+/s)?\s+\d+:\d\d:\d\d\s*$", stderr, re.M)
    return [" ".join(b.split()) for b in found]


def test_the_rebuild_counts_the_logs_events_and_the_accounts_rows_apart(
    store_url: str, engine: Engine
) -> None:
    apply_scenario(engine)  # 56 events, 8 accounts
    done = run(store_url, "rebuild")
    assert done.returncode == 0, done.stderr
    assert bars(done.stderr, "rebuild") == ["56/56 events", "8/8 accounts' rows"]
    assert "resumes" not in done.stderr


def test_a_resumed_rebuild_says_so_and_counts_on(
    store_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after two batches of two accounts (the cursor committed with each), then
    one account more registered: the next run says it resumes, to the old target, with 4
    accounts' rows written; its bars end at the log's head and at every account."""
    apply_scenario(engine)
    from projections import rebuild as rebuild_module  # the in-process run to be killed

    monkeypatch.setattr(rebuild_module, "ACCOUNTS_PER_TRANSACTION", 2)
    track, batches = SqlReadModel.track, []

    def killed_at_the_third_batch(self: SqlReadModel, conn: Any, *args: Any) -> None:
        if args[1:] == ("rebuild:accounts",):
            batches.append(args[0])
            if len(batches) == 3:
                raise KeyboardInterrupt  # inside its transaction: two batches stand
        track(self, conn, *args)

    with monkeypatch.context() as m:
        m.setattr(SqlReadModel, "track", killed_at_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            rebuild_module.rebuild(engine.app, store_url)
    (result,) = engine.apply([LATE])
    assert result.status == "applied"  # 2 events more: 58
    done = run(store_url, "rebuild")
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert first == (
        "rebuild resumes an interrupted rebuild to log position 56: the rows of 4 accounts "
        "are written already, not again (the log is read again)"
    )
    assert bars(done.stderr, "rebuild") == ["58/58 events", "8/8 accounts' rows"]
    assert run(store_url, "catch-up").stdout.strip() == (
        "SQL read models at log position 58: nothing new"
    )


def test_a_catch_up_counts_only_what_is_new_and_nothing_when_nothing_is(
    store_url: str, engine: Engine
) -> None:
    apply_scenario(engine)
    first = run(store_url, "catch-up")
    assert bars(first.stderr, "catch-up") == ["56/56 events past log position 0"]
    again = run(store_url, "catch-up")
    assert again.returncode == 0 and again.stderr == ""  # no bar at all
    assert again.stdout.strip() == "SQL read models at log position 56: nothing new"
    (result,) = engine.apply([LATE])
    assert result.status == "applied"
    late = run(store_url, "catch-up")
    assert bars(late.stderr, "catch-up") == ["2/2 events past log position 56"]
    assert late.stdout.strip() == "SQL read models at log position 58 (2 events read past 56)"


@pytest.mark.parametrize(
    "args",
    [("catch-up",), ("rebuild",), ("report", "CN", "--from", "2020-05-01", "--to", "2020-05-31")],
)
def test_a_command_gives_back_every_sql_connection_it_opened(
    store_url: str, engine: Engine, args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in one process (a library user's, a test's), a command closes what it opened: a
    catch-up once kept one PostgreSQL connection per run until the garbage collector ran."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    apply_scenario(engine)
    opened: list[int] = []

    def connected(dbapi_connection: Any, _: Any) -> None:
        opened.append(id(dbapi_connection))

    def closed(dbapi_connection: Any, _: Any) -> None:
        opened.remove(id(dbapi_connection))

    event.listen(Pool, "connect", connected)
    event.listen(Pool, "close", closed)
    try:
        for _ in range(2):
            done = run(store_url, *args)
            assert done.returncode == 0, done.stderr
    finally:
        event.remove(Pool, "connect", connected)
        event.remove(Pool, "close", closed)
    assert opened == []
