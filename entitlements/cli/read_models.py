"""The rejection log and the SQL read models: rejections, rebuild, catch-up, report,
reconcile."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from entitlements.application import audit, read_models, report
from entitlements.application.engine import Engine
from entitlements.application.read_models import Resumed
from entitlements.cli.exits import EXIT_OK
from entitlements.cli.output import Bars, err, out
from entitlements.cli.parsers import (
    Declare,
    Subparsers,
    as_known_at_option,
    json_option,
    region_argument,
)
from entitlements.domain.rules import CAPABILITIES


def cmd_rejections(engine: Engine, args: argparse.Namespace) -> int:
    """Every rejected command, in log order: as given, who asked, why, both clocks."""
    entries = engine.rejections(account_id=args.account, region=args.region)
    if args.json:
        print(json.dumps(entries))
        return EXIT_OK
    scope = _scope(args)
    table = Table(title=escape(f"rejected commands ({scope}, log order)"), title_justify="left")
    for col in ("position", "command", "subject", "actor", "effective_at", "recorded_at", "reason"):
        table.add_column(col)
    for e in entries:
        subject = e["account_id"] or e["region"] or ""
        cells = (
            str(e["position"]),
            e["command"],
            subject,
            e.get("actor") or "",
            e["effective_at"],
            e["recorded_at"],
            e["reason"],
        )
        table.add_row(*(escape(c) for c in cells))
    out.print(table)
    if not entries:
        out.print("no rejected command on file")
    return EXIT_OK


def _scope(args: argparse.Namespace) -> str:
    """Which rejections were asked for, for the table's title."""
    asked = (
        args.account and f"account {args.account}",
        args.region and f"region {args.region}",
    )
    return " ".join(x for x in asked if x) or "every command"


def cmd_rebuild(engine: Engine, args: argparse.Namespace) -> int:
    """The bars count the log's events exactly (read to the target, then caught up to the
    head) and the accounts whose rows are written; a resumed rebuild says so first."""
    started = time.perf_counter()
    bars = Bars("rebuild")
    resumed: list[Resumed] = []

    def say_resumed(r: Resumed) -> None:
        resumed.append(r)
        done = (
            "every row is written already; the tables are caught up from there"
            if r.rows_done
            else f"the rows of {r.accounts:,} accounts are written already, not again"
        )
        err.print(
            f"rebuild resumes an interrupted rebuild to log position {r.target:,}: {done} "
            "(the log is read again)",
            soft_wrap=True,
        )

    try:
        position = read_models.rebuild(
            engine,
            bars.bar(lambda: "events"),
            accounts=bars.bar(lambda: "accounts' rows"),
            resumed=say_resumed,
        )
    finally:
        bars.stop()
    seconds = time.perf_counter() - started
    summary = {
        "position": position,
        "seconds": round(seconds, 2),
        "events_per_second": round(position / seconds) if seconds else None,
        "resumed": {"target": resumed[0].target, "accounts": resumed[0].accounts}
        if resumed
        else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        out.print(
            f"rebuilt every read model up to log position {position} in {seconds:.1f} s "
            f"({summary['events_per_second'] or 0:,} events/s); check-index snapshot saved"
        )
    return EXIT_OK


def cmd_reconcile(engine: Engine, args: argparse.Namespace) -> int:
    recorded = engine.reconcile(args.region)
    out.print(
        f"hosting fan-out complete{escape(' in ' + args.region) if args.region else ''}: "
        f"{recorded} missing event(s) recorded"
    )
    return EXIT_OK


def cmd_catch_up(engine: Engine, args: argparse.Namespace) -> int:
    """The bar counts the events read, past the position the tables were at (none: no bar)."""
    with read_models.catch_up(engine) as projection:  # kept: polls read what is new
        bars = Bars("catch-up")

        def unit() -> str:
            return f"events past log position {projection.read_from:,}"

        try:
            position = projection.run(bars.bar(unit, lambda: projection.read_from))
        finally:
            bars.stop()
        read = position - projection.read_from
        out.print(
            f"SQL read models at log position {position}"
            + (f" ({read:,} events read past {projection.read_from})" if read else ": nothing new")
        )
        while args.follow:  # pragma: no cover - interactive
            time.sleep(args.interval)
            position = projection.run()
    return EXIT_OK


def cmd_report(engine: Engine, args: argparse.Namespace) -> int:
    """Daily counts per plan from the SQL read models (brought level with the log first)."""
    start, end = report.parse_day(args.from_, "--from"), report.parse_day(args.to, "--to")
    report.check_range(start, end)
    capabilities = args.capability or ["host"]
    report.check_capabilities(capabilities)
    known = audit.parse_when("--as-known-at", args.as_known_at)
    behind = read_models.level(engine)
    if behind:
        err.print(f"SQL read models caught up ({behind} log positions behind)")
    counts = report.daily_report(engine.url, args.region, start, end, known, capabilities)
    if args.png:
        try:
            report.plot(counts, Path(args.png))
        except OSError as e:
            raise ValueError(f"--png: cannot write {args.png}: {e.strerror or e}") from None
        err.print(f"picture written to {escape(args.png)}", soft_wrap=True)
    if args.json:
        print(json.dumps(report.as_json(counts)))
    elif args.csv:
        sys.stdout.write(report.as_csv(counts))
    else:
        for table in report.as_tables(counts):
            out.print(table)
    return EXIT_OK


def _add_rejections(sub: Subparsers) -> None:
    """`rejections`."""
    p = sub.add_parser(
        "rejections",
        help="the rejection log: every rejected command, who asked and why",
        description="Lists every command a domain rule rejected, in log order: the "
        "command as given, its command_id and actor, the reason, and both clocks "
        "(recorded_at is when the rejection was recorded). Rejections survive "
        "restarts; they change no account and no region.",
        run=cmd_rejections,
    )
    p.add_argument("--account", metavar="A", help="only commands on this account")
    p.add_argument("--region", metavar="R", help="only commands on this region or its accounts")
    json_option(p)


def _add_rebuild(sub: Subparsers) -> None:
    """`rebuild`: the index is not needed, so not loaded."""
    p = sub.add_parser(
        "rebuild",
        help="rebuild every read model from the log, with progress",
        description="Rebuilds the SQL read models (the tables accounts, "
        "account_state_intervals and region_state_intervals, and their views "
        "capability_intervals, capabilities_now and capability_day_changes) and the "
        "check-index snapshot from the whole log, in large batches, into fresh tables swapped in at the end: checks keep answering meanwhile. "
        "Killed halfway, run it again: it resumes where it stopped and ends at the log's head. "
        "Run it as often as you like.",
        run=cmd_rebuild,
        lazy_index=True,
    )
    json_option(p, help="print a JSON summary")


def _add_catch_up(sub: Subparsers) -> None:
    """`catch-up`: the index is not needed, so not loaded."""
    p = sub.add_parser(
        "catch-up",
        help="bring the SQL read models up to the log (incremental)",
        description="Writes the rows of the accounts that changed since the read "
        "models' tracked position, exactly once.",
        run=cmd_catch_up,
        lazy_index=True,
    )
    p.add_argument("--follow", action="store_true", help="keep following the log")
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --follow"
    )


def _add_report(sub: Subparsers) -> None:
    """`report REGION`: the index is not needed, so not loaded."""
    p = sub.add_parser(
        "report",
        help="analysts: how many of REGION's accounts had a capability each day, per plan",
        description="For each day from --from to --to (both inclusive), how many of "
        "REGION's accounts may do the capability (default: host), per plan (the plan the "
        "account had then) and in total, counted at 00:00 UTC of the day: the number of "
        "accounts for which `check ACCOUNT CAPABILITY --at DAY --as-known-at K` says yes. "
        "The region's rule switches are shown on their day. The counts come from the SQL "
        "read models (the view capability_day_changes), caught up with the log first. "
        "At most five years of days.",
        epilog="examples:\n  entitlements report CN --from 2020-01-01 --to 2020-12-31 --png cn-2020.png\n"
        "  entitlements report CN --from 2020-09-01 --to 2020-10-31 --as-known-at 2020-10-20 --csv\n"
        "  entitlements report CN --from 2020-05-01 --to 2020-06-30 --capability host "
        "--capability subscribe_online --json",
        run=cmd_report,
        lazy_index=True,
    )
    region_argument(p)
    p.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="DATE",
        help="first day, YYYY-MM-DD (inclusive)",
    )
    p.add_argument("--to", required=True, metavar="DATE", help="last day, YYYY-MM-DD (inclusive)")
    as_known_at_option(p)
    p.add_argument(
        "--capability",
        action="append",
        metavar="C",
        help="a capability to count (repeatable; default host): "
        + " | ".join((*CAPABILITIES, "route_via:R")),
    )
    p.add_argument("--png", metavar="FILE", help="also draw the counts over time into FILE")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    json_option(shape)


def add_reconcile_parser(sub: Subparsers) -> None:
    """`reconcile`, listed after `token` in `--help`."""
    p = sub.add_parser(
        "reconcile",
        help="record any hosting event a region rule still lacks (idempotent)",
        description="Records the HostingRevoked / HostingRestored events that a region "
        "rule's fan-out has not recorded yet. Rarely needed: after a crash halfway, the next "
        "writer (any command) finishes the fan-out by itself. Running it when nothing is "
        "missing records nothing.",
        run=cmd_reconcile,
    )
    p.add_argument("--region", help="only this region (default: every region)")


#: rejections, rebuild, catch-up and report, in the order `--help` lists them (reconcile
#: comes later, after `token`).
PARSERS: tuple[Declare, ...] = (_add_rejections, _add_rebuild, _add_catch_up, _add_report)
