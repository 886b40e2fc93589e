"""The command line assembled: the parser of every group, run() and its mapping of errors
to exit codes, and main(), the console script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import PersistenceError
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from entitlements.adapters.damaged import DamagedRecord
from entitlements.adapters.store import DEFAULT_URL, ENV_VAR, StoreError, lasting_store_url
from entitlements.application.engine import Engine
from entitlements.cli import (
    apply,
    audit,
    checks,
    demo,
    migrate,
    read_models,
    serve,
    snapshot,
    tokens,
    what_if,
    who_can,
)
from entitlements.cli.exits import (
    EXIT_BROKEN_PIPE,
    EXIT_MALFORMED,
    EXIT_NOT_REACHED,
    EXIT_STORE,
    EXIT_UNKNOWN_ACCOUNT,
    ONE_COMMAND,
)
from entitlements.cli.output import err
from entitlements.cli.parsers import Declare
from entitlements.domain.commands import MalformedCommand
from entitlements.domain.decisions import PositionNotReached, UnknownAccount

DESCRIPTION = """\
What may this account do at time T, as we knew it at time K?

Every answer is derived from an append-only log of account and region events, each
with two clocks: effective_at (when it takes effect) and recorded_at (when we learned it).

  entitlements demo                               the 2020 China story, end to end
  entitlements apply commands.jsonl               record a command file
  entitlements check cn-free-01 host --at 2020-05-19
  entitlements check cn-ent-02 host --at 2020-10-01 --as-known-at 2020-10-20 --json
  entitlements capabilities cn-pro-01 --at 2020-08-11
  entitlements history cn-free-02
  entitlements explain cn-free-01 host --at 2020-05-19     why, since when, and the rule behind it
  entitlements audit jurisdiction CN                       CN's requests never left CN (exit 6 if one did)
  entitlements audit export cn-free-01 --format csv        a case file
  entitlements rebuild                            SQL read models + index snapshot, from the log
  entitlements report CN --from 2020-01-01 --to 2020-12-31 --png cn.png    daily counts per plan
  entitlements migrate --to postgresql://app@db-host/entitlements   outgrow SQLite: copy, verified

Times are ISO 8601; a bare date is 00:00 UTC, a time without offset is UTC.
"""


#: A command's handler: (the engine, or None with no_engine, the parsed arguments) -> exit code.
Handler = Callable[[Any, argparse.Namespace], int]

DB_HELP = (
    f"store URL: sqlite:///path or postgresql://user@host/db (default: ${ENV_VAR}, else "
    f"{DEFAULT_URL}); before or after the command, anywhere among its arguments"
)


class _Help(argparse.HelpFormatter):
    """`--help` that wraps a text written as one line (a description) to the terminal, and
    keeps a text written in lines (an epilog's examples, the main description) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


#: How run() opens the store for a command, when a subcommand's parser says so:
#: `no_engine` (the handler opens it itself, if at all), `lazy_index` (without loading the
#: check index) and `store_must_exist=False` (it may create the store).
ENGINE_OPTIONS = ("no_engine", "lazy_index", "store_must_exist")


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser: it takes `--db` too, so the option goes anywhere on the line
    (`entitlements check A host --db X`). Its default is SUPPRESS, so a subcommand without
    it keeps what the main parser read; nested subcommands are of this class as well. Its
    help is `_Help`'s. `sub.add_parser(name, ..., run=handler, lazy_index=True)` also takes
    the handler run() calls and ENGINE_OPTIONS, kept as the parsed arguments' defaults: a
    command is declared with what runs it, in one call."""

    def __init__(self, *args: Any, run: Handler | None = None, **kwargs: Any) -> None:
        defaults = {option: kwargs.pop(option) for option in ENGINE_OPTIONS if option in kwargs}
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)
        self.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help=DB_HELP)
        if run is not None:
            defaults["run"] = run
        self.set_defaults(**defaults)


#: Every command's declaration, in the order `--help` lists them: that order is kept here
#: alone (checks and read_models declare several commands each).
COMMANDS: tuple[Declare, ...] = (
    apply.add_parser,
    *checks.PARSERS,
    who_can.add_parser,
    audit.add_parser,
    *read_models.PARSERS,
    tokens.add_parser,
    read_models.add_reconcile_parser,
    serve.add_parser,
    migrate.add_parser,
    what_if.add_parser,
    snapshot.add_parser,
    demo.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitlements",
        description=DESCRIPTION,
        formatter_class=_Help,
    )
    parser.add_argument("--db", metavar="URL", help=DB_HELP)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Subcommand
    )
    for declare in COMMANDS:
        declare(sub)
    return parser


def _first_line(e: BaseException) -> str:
    """The cause in one line: for SQLAlchemy errors the driver's own message (`e.orig`),
    never the SQL statement nor the "Background on this error" link on later lines."""
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return lines[0].strip() if lines else type(cause).__name__


def _fail(label: str, e: BaseException, code: int, suffix: str = "") -> int:
    """Print one error line on stderr (escaped, never wrapped: logs grep it) and return code."""
    head = f"[red]{label}:[/] " if label else ""
    err.print(head + escape(_first_line(e) + suffix), soft_wrap=True)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.run
    try:
        if getattr(args, "no_engine", False):
            return handler(None, args)
        lazy = getattr(args, "lazy_index", False)
        must_exist = getattr(args, "store_must_exist", True)  # `token create` may start one
        lasting_store_url(args.db, ONE_COMMAND)  # memory:// would end with this command
        with Engine(args.db, start=not lazy, must_exist=must_exist) as engine:
            return handler(engine, args)
    except MalformedCommand as e:
        return _fail("malformed", e, EXIT_MALFORMED, " (nothing applied)")
    except UnknownAccount as e:
        return _fail("error", e, EXIT_UNKNOWN_ACCOUNT)
    except PositionNotReached as e:
        return _fail("not reached", e, EXIT_NOT_REACHED)
    except DamagedRecord as e:  # before ValueError: the library's error was one
        return _fail("damaged record", e, EXIT_STORE)
    except (ValueError, StoreError, FileNotFoundError, IsADirectoryError) as e:
        return _fail("error", e, EXIT_MALFORMED)
    except (PersistenceError, SQLAlchemyError) as e:
        return _fail("store error", e, EXIT_STORE)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # stdout's reader went away: main() ends quietly, 141
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("ENTITLEMENTS_DEBUG"):
            raise
        return _fail(
            f"error: {type(e).__name__}",
            e,
            EXIT_STORE,
            " (ENTITLEMENTS_DEBUG=1 shows the traceback)",
        )


def main() -> None:
    """The console script. Whichever command was printing when stdout's reader went away
    (`entitlements ... | head -1`) exits 141 (128 + SIGPIPE, as a shell reports it),
    quietly: no traceback, no error at the interpreter's last flush."""
    try:
        try:
            code = run()
        finally:  # also after argparse's own exit (--help)
            sys.stdout.flush()
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    if code == EXIT_BROKEN_PIPE:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)
