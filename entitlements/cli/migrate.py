"""`entitlements migrate --to URL`: the store (`--db`) copied into another, e.g. the
embedded SQLite file into PostgreSQL (entitlements/application/migrate.py does the work)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape

from entitlements.adapters.store import lasting_store_url
from entitlements.application.migrate import BATCH, NotVerified, migrate
from entitlements.cli.exits import EXIT_OK, EXIT_STORE, EXIT_VIOLATION, ONE_COMMAND
from entitlements.cli.output import Bars, err, out
from entitlements.cli.parsers import Subparsers, json_option

MIGRATE_HELP = """\
Copies the store (--db, or $ENTITLEMENTS_DB) into the store at --to: the log with every
record at its own position, its topic and stored state unchanged (so the integrity chain,
the command records that keep commands exactly-once, receipts and positions all stay
valid), and the API tokens. Then it verifies: the source's chain is recomputed (`audit
verify`) and must hold its head receipt, and the target must hold exactly the rows that
walk read, byte for byte (a digest of both), so that it gives the same head receipt; else
exit 6.

Killed halfway, run it again: it goes on from the target's last record, copying nothing
twice. A target that holds another history (a record, or a token name, that is not the
source's) is refused in one line (exit 2), nothing written. Stop the writers of the
source first: what is copied is the log up to its head when the run starts (a record
appended since is said, and copied by running again). A source whose own chain is broken
is copied as it is and named (exit 6): the copy holds the same break, nothing more. The
read models and snapshots are derived: build them on the target with `entitlements
rebuild --db URL`.

  entitlements migrate --db entitlements.db --to postgresql://app@db-host:5432/entitlements
  entitlements migrate --db postgresql://app@db-host/entitlements --to back.db   # and back
"""


def cmd_migrate(_: Any, args: argparse.Namespace) -> int:
    """The bar counts records copied (on a terminal); the summary is one line, or JSON."""
    source = lasting_store_url(args.db, ONE_COMMAND)
    target = lasting_store_url(args.to, ONE_COMMAND, option="--to")
    bars = Bars("migrate")
    progress = bars.bar(lambda: "records") if err.is_terminal else None

    def verifying(records: int) -> None:
        bars.stop()
        if err.is_terminal:
            err.print(f"verifying: the source's chain and the copy's rows ({records:,}) ...")

    try:
        done = migrate(source, target, args.batch, progress, verifying=verifying)
    except NotVerified as e:
        return _refused(args, str(e), EXIT_VIOLATION, "not verified")
    except TimeoutError as e:  # another writer holds the target
        return _refused(args, f"--to: {e}", EXIT_STORE, "store error")
    finally:
        bars.stop()
    summary = done.as_dict()
    if args.json:
        print(json.dumps(summary))
        return EXIT_OK
    receipt = summary["receipt"]
    head = f"{receipt['hash']}@{receipt['position']}" if receipt["hash"] else "(nothing chained)"
    resumed = f", resumed after position {done.resumed_from}" if done.resumed_from else ""
    out.print(
        escape(
            f"migrated {done.copied} records{resumed} and {done.tokens_copied} tokens to "
            f"{_shown(target)}; both stores verify to the receipt {head}"
        ),
        soft_wrap=True,
    )
    if done.source_moved_to is not None:
        out.print(
            escape(
                f"the source has moved on to position {done.source_moved_to} meanwhile: "
                "run migrate again to copy the rest"
            ),
            soft_wrap=True,
        )
    return EXIT_OK


def _shown(url: str) -> str:
    """A URL to print: never its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
    return url


def _refused(args: argparse.Namespace, why: str, code: int, label: str) -> int:
    """One line on stderr (and the JSON on stdout with --json), exit `code`."""
    if args.json:
        print(json.dumps({"ok": False, "error": why}))
    err.print(f"[red]{label}:[/] " + escape(why), soft_wrap=True)
    return code


def positive_batch(text: str) -> int:
    """--batch: a whole number of records per transaction, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_parser(sub: Subparsers) -> None:
    """`migrate --to URL`: opens no engine (it reads and writes records, decides nothing)."""
    p = sub.add_parser(
        "migrate",
        help="copy the store into another (SQLite -> PostgreSQL, or back); resumable, verified",
        description=MIGRATE_HELP,
        run=cmd_migrate,
        no_engine=True,
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the target store: postgresql://user@host:port/db, sqlite:///path or a path",
    )
    p.add_argument(
        "--batch",
        type=positive_batch,
        default=BATCH,
        metavar="N",
        help=f"records per transaction on the target (default {BATCH:,}): a kill loses one",
    )
    json_option(p, help="print a JSON summary")
