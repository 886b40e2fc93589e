"""`entitlements demo`: the china-2020 story on a store of its own, and what it answers; then
the story's second thread, where a meeting's data may travel (residency-2020, in memory)."""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import tempfile
from contextlib import closing
from datetime import datetime
from importlib import resources
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from entitlements.adapters.store import sqlite_path
from entitlements.application import audit, read_models, report
from entitlements.application.engine import Engine, open_engine
from entitlements.cli.exits import EXIT_OK
from entitlements.cli.output import out, yes_no
from entitlements.cli.parsers import Subparsers
from entitlements.domain.commands import Command, parse_command_file
from entitlements.domain.decisions import CommandResult


def scenario_path(name: str = "china-2020") -> Path:
    """The project's own copy of a shared scenario command file."""
    return Path(str(resources.files("entitlements") / "scenarios" / f"{name}.jsonl"))


DEMO_DATES = ("2020-05-18", "2020-05-19", "2020-06-15", "2020-08-24", "2020-10-01", "2020-10-15")
DEMO_CAPS = (
    "join",
    "host",
    "subscribe_online",
    "purchase_direct",
    "purchase_via_partner",
    "max_participants",
)


def cmd_demo(_: Engine | None, args: argparse.Namespace) -> int:
    """The story in a store of its own: at `--db X` (a new SQLite file, kept to explore),
    else in a temporary folder removed when the demo ends (nothing is left behind)."""
    if args.db is None:  # never $ENTITLEMENTS_DB: that names a store of real data
        with tempfile.TemporaryDirectory(prefix="entitlements-demo-") as folder:
            _demo(Path(folder) / "china-2020.db", None)
        return EXIT_OK
    path = _demo_target(args.db)
    _demo(path, args.db)
    return EXIT_OK


def _demo_target(db: str) -> Path:
    """The SQLite file `--db` names for the demo: new (or empty), or the demo's own store
    from an earlier run (run again, it records nothing twice); never a store of data."""
    path = sqlite_path(db)
    if path is None:
        raise ValueError(f"--db: the demo builds an SQLite file; give a file path, not {db!r}")
    if path.is_dir() or (path.exists() and path.stat().st_size > 0 and not _is_demo(path)):
        raise ValueError(
            f"--db: {path} exists already and is not the demo's store; the demo builds a new "
            "store (remove it, or give another path)"
        )
    return path


def _is_demo(path: Path) -> bool:
    """Whether the file is an entitlements store whose log is exactly the demo's: its head
    (position and integrity hash) that of the story applied to a new store. Read-only until
    then, so a file of anything else is never opened as a store (nor written)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return False
    if "stored_events" not in tables:
        return False
    with (
        tempfile.TemporaryDirectory(prefix="entitlements-demo-") as folder,
        open_engine(f"sqlite:///{Path(folder) / 'demo.db'}") as fresh,
    ):
        fresh.apply_parsed(parse_command_file(scenario_path()))
        story = audit.log_head(fresh)
    with open_engine(f"sqlite:///{path}") as theirs:
        return audit.log_head(theirs) == story


def _demo(path: Path, kept: str | None) -> None:
    """Apply the story to a new store at `path` and show what it answers; `kept` is the
    --db it was given (the store stays), or None (it goes with the demo)."""
    url = f"sqlite:///{path}"
    where = escape(str(path)) if kept else "a temporary file, removed at the end"
    out.print(f"[bold]china-2020[/] on a fresh SQLite store: {where}\n")
    commands = parse_command_file(scenario_path())
    with open_engine(url) as engine:
        results = engine.apply_parsed(commands)
        out.print(_applied_table(commands, results))
        _print_capabilities(engine, commands, results)
        _print_beliefs(engine)
        if kept:
            _demo_picture(engine, path)
    _print_residency()
    _print_next_steps(kept)


def _applied_table(commands: list[tuple[int, Command]], results: list[CommandResult]) -> Table:
    """Section 1: each line of the story and what became of it."""
    table = Table(title="1. The command file, applied in order", title_justify="left")
    for col in ("line", "command", "subject", "effective", "result"):
        table.add_column(col)
    for (n, cmd), r in zip(commands, results, strict=True):
        subject = getattr(cmd, "account_id", None) or getattr(cmd, "region", "")
        result = (
            "[green]applied[/]"
            if r.status == "applied"
            else f"[red]rejected[/]: {escape(str(r.reason))}"
        )
        table.add_row(
            str(n),
            escape(cmd.command),
            escape(str(subject)),
            cmd.effective_at.date().isoformat(),
            result,
        )
    return table


def _print_capabilities(
    engine: Engine, commands: list[tuple[int, Command]], results: list[CommandResult]
) -> None:
    """Section 2: what each account registered by then could do, on each of the story's days."""
    registered = {
        c.account_id: c.effective_at.date().isoformat()
        for (_, c), r in zip(commands, results, strict=True)
        if c.command == "register_account" and r.status == "applied"
    }
    for date in DEMO_DATES:
        accounts = sorted(a for a, since in registered.items() if since <= date)
        table = Table(title=f"\n2. What each account could do on {date}", title_justify="left")
        table.add_column("account")
        for cap in DEMO_CAPS:
            table.add_column(cap.replace("_", " "), justify="center")
        for account in accounts:
            decisions = {d.capability: d for d in engine.capabilities(account, at=date)}
            table.add_row(escape(account), *(yes_no(decisions[c]) for c in DEMO_CAPS))
        out.print(table)


def _print_beliefs(engine: Engine) -> None:
    """Section 3: one answer as known before and after a backdated revocation."""
    out.print(
        "\n[bold]3. What did we believe?[/] cn-ent-02's hosting was revoked on 2020-11-01, backdated to 2020-09-15:"
    )
    for known in ("2020-10-20", None):
        d = engine.check("cn-ent-02", "host", at="2020-10-01", as_known_at=known)
        label = f"as known at {known}" if known else "as known now"
        out.print(f"  host at 2020-10-01 {label}: {yes_no(d)} — {escape(d.reason)}")


RESIDENCY_DATES = ("2020-04-10", "2020-04-20", "2020-05-02", "2020-07-02")
RESIDENCY_ACCOUNTS = ("us-free-01", "us-ent-01", "de-pro-01", "cn-free-r1")
RESIDENCY_VIA = ("CN", "US", "DE", "HK")


def _print_residency() -> None:
    """Section 5: the story's second thread, applied to an in-memory store of its own (the
    demo's SQLite store stays china-2020's alone): route_via answers on key days, one
    answer as known before the isolation was recorded, and the residency audit."""
    out.print(
        "\n[bold]5. Where a meeting's data may travel[/] (residency-2020, in memory): CN's "
        "data centres isolated from 2020-04-18 (recorded 2020-04-14, ahead of time); "
        "us-ent-01 chose US and DE, de-pro-01 DE and US (its choice naming CN refused; "
        "set aside when it lapsed to free on 2020-07-01); us-ent-01 suspended on 2020-06-01"
    )
    with open_engine("memory://") as engine:
        engine.apply_parsed(parse_command_file(scenario_path("residency-2020")))
        for date in RESIDENCY_DATES:
            table = Table(title=f"\n5. Through which data centres on {date}", title_justify="left")
            table.add_column("account")
            for via in RESIDENCY_VIA:
                table.add_column(f"via {via}", justify="center")
            for account in RESIDENCY_ACCOUNTS:
                answers = [engine.check(account, f"route_via:{v}", at=date) for v in RESIDENCY_VIA]
                table.add_row(escape(account), *(yes_no(d) for d in answers))
            out.print(table)
        for known in ("2020-04-13", None):
            d = engine.check("us-free-01", "route_via:CN", at="2020-04-20", as_known_at=known)
            label = f"as known at {known}" if known else "as known now"
            out.print(
                f"  us-free-01 via CN on 2020-04-20 {label}: {yes_no(d)} — {escape(d.reason)}"
            )
        proof = audit.residency(engine, "CN")
        verdict = "holds" if proof["holds"] else f"{len(proof['violations'])} violations"
        out.print(
            f"  audit residency CN: {verdict}; before the isolation took effect, "
            f"{proof['exposure']['accounts']} accounts outside CN could be routed via CN"
        )


def _print_next_steps(kept: str | None) -> None:
    """How to keep the store (it was temporary), or commands to explore the one kept."""
    if kept is None:
        out.print(
            "\nTo keep the store (and the picture of CN's hosting in 2020) and explore it: "
            "[bold]entitlements demo --db demo.db[/]",
            soft_wrap=True,
        )
        return
    db = escape(shlex.quote(kept))  # to paste as it is, spaces and all
    out.print(
        f"\nExplore it: [bold]entitlements history cn-free-02 --db {db}[/]\n"
        f"            [bold]entitlements check cn-pro-01 host --at 2020-10-01 --json --db {db}[/]\n"
        f"            [bold]entitlements report CN --from 2020-09-01 --to 2020-10-31 --as-known-at 2020-10-20 --db {db}[/]",
        soft_wrap=True,
    )


def _demo_picture(engine: Engine, path: Path) -> None:
    """Section 4: CN's daily hosting counts of 2020, drawn next to the demo's store."""
    read_models.level(engine)
    picture = path.with_name("cn-2020-host.png")
    first, last = datetime(2020, 1, 1).date(), datetime(2020, 12, 31).date()
    year = report.daily_report(engine.url, "CN", first, last)
    report.plot(year, picture)
    out.print(
        "\n[bold]4. How many CN accounts could host, day by day in 2020[/] (per plan, "
        f"as known now): {escape(str(picture))}",
        soft_wrap=True,
    )


def add_parser(sub: Subparsers) -> None:
    """`demo`: never $ENTITLEMENTS_DB, so no engine is opened for it."""
    sub.add_parser(
        "demo",
        help="run the china-2020 story on a fresh SQLite store and show the answers",
        description="Applies the china-2020 command file to a new SQLite store and shows "
        "what it answers. With --db FILE the store is built there (FILE must not exist, "
        "or be empty) and kept, with its picture cn-2020-host.png beside it, to explore "
        "with the other commands; without --db it lives in a temporary folder removed "
        "when the demo ends. $ENTITLEMENTS_DB is never used: it names a store of data.",
        run=cmd_demo,
        no_engine=True,
    )
