"""`entitlements what-if FILE`: a command file applied to a copy of the history in memory
(entitlements/application/what_if.py); prints what `apply` would and the answers that would
change. Nothing is recorded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from entitlements.adapters.store import lasting_store_url
from entitlements.application.engine import Engine
from entitlements.application.what_if import WhatIfAnswer, what_if, window
from entitlements.cli.exits import EXIT_OK, ONE_COMMAND
from entitlements.cli.output import err, out
from entitlements.cli.parsers import Subparsers, command_file_argument, json_option
from entitlements.domain.commands import parse_command_file

_EARLIER = {
    "command": "apply_region_rule",
    "region": "CN",
    "rule": "free_hosting_suspended",
    "effective_at": "2020-05-01",
    "recorded_at": "2020-05-01",
}
_LIFT = {
    "command": "lift_region_rule",
    "region": "CN",
    "rule": "direct_sales_closed",
    "effective_at": "2020-09-01",
}
EXAMPLES = (
    "examples (FILE: one JSON command a line; bash's <(echo ...) makes one):\n"
    f"  entitlements what-if <(echo '{json.dumps(_EARLIER)}') --from 2020-01-01 --json\n"
    f"  entitlements what-if <(echo '{json.dumps(_LIFT)}') --png cn-what-if.png --region CN"
)


def _answer(a: dict[str, Any]) -> str:
    shown = "yes" if a["allowed"] else "no"
    return shown if a["value"] is None else f"{shown} ({a['value']})"


def _print(answer: WhatIfAnswer) -> None:
    """Three tables for people: the commands' results, the changes, the summary."""
    data = answer.as_dict()
    results = Table(title="what apply would do (nothing recorded)", title_justify="left")
    for col in ("line", "command", "status", "reason"):
        results.add_column(col)
    for r in data["results"]:
        results.add_row(str(r["line"]), r["command"], r["status"], escape(r["reason"] or ""))
    out.print(results)
    changes = Table(title=f"answers that change ({len(data['changes'])})", title_justify="left")
    for col in ("account", "capability", "from", "to", "before", "after"):
        changes.add_column(col)
    for c in data["changes"]:
        changes.add_row(
            escape(c["account_id"]),
            c["capability"],
            c["from"],
            c["to"] or "-",
            _answer(c["before"]),
            _answer(c["after"]),
        )
    out.print(changes)
    summary = Table(title="per region and plan", title_justify="left")
    for col in ("region", "plan", "accounts", "lost", "gained", "changed"):
        summary.add_column(col)
    for region, plans in data["summary"].items():
        for plan, row in plans.items():
            counts = (str(row[k]) for k in ("accounts", "lost", "gained", "changed"))
            summary.add_row(escape(region), plan, *counts)
    out.print(summary)
    out.print(f"[dim]the store's log position {answer.position}, unchanged[/]")


def _target(args: argparse.Namespace) -> Path | None:
    """The --png file, checked before anything runs (a missing folder, a folder); --region
    only with it."""
    if args.png is None:
        if args.region is not None:
            raise ValueError("--region: only with --png (the region whose counts are drawn)")
        return None
    from entitlements.cli import pictures  # matplotlib loads only when a picture is asked for

    try:
        return pictures.writable_target(args.png)
    except OSError as e:
        raise ValueError(f"--png: cannot write {args.png!r}: {e.strerror or e}") from None


def _picture(answer: WhatIfAnswer, target: Path, path: str) -> None:
    """Draw the region's counts before and after into `target`, whole or not at all."""
    from entitlements.cli import pictures
    from entitlements.cli.what_if_picture import what_if_figure

    assert answer.counts is not None  # asked for with --png
    try:
        pictures.save_png(what_if_figure(answer.counts), target)
    except OSError as e:
        raise ValueError(f"--png: cannot write {path!r}: {e.strerror or e}") from None
    err.print(f"picture written to {escape(path)}", soft_wrap=True)


def cmd_what_if(_: Engine | None, args: argparse.Namespace) -> int:
    """Validate the file whole (as `apply` does: a bad line refuses it, exit 2), the times
    and the --png path, then open the store (it must exist) and answer from a copy of it;
    with --png, draw before printing anything (a failure prints one line only)."""
    lasting_store_url(args.db, ONE_COMMAND)
    start, end, known = window(args.start, args.end, args.as_known_at)
    target = _target(args)
    commands = parse_command_file(args.file, future=True)  # whole: a bad line refuses it
    with Engine(args.db, must_exist=True) as engine:
        drawn = target is not None
        answer = what_if(
            engine, commands, start, end, known, counts=drawn, counts_region=args.region
        )
    data = answer.as_dict()
    if target is not None:
        _picture(answer, target, args.png)
        data["png"] = args.png
    if args.json:
        print(json.dumps(data))
    else:
        _print(answer)
    return EXIT_OK


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "what-if",
        help="apply a command file to a copy of the history in memory; record nothing",
        description="Validate the whole command file as `apply` does (a malformed line "
        "refuses it: exit 2), then apply its commands to a copy of the store's history in "
        "memory, each at its recorded_at (default now; earlier than the store's newest, or "
        "later than now, is allowed here), decided against what was recorded before it, "
        "with the events already recorded kept as they are. Prints what `apply` would "
        "print, every account and capability whose answer changes in [--from, --to) as "
        "known at --as-known-at (default: everything, the hypothetical commands included), "
        "and a summary per region and plan. Nothing is recorded. --png FILE also draws a "
        "region's daily counts (as `report` counts them, per plan, at 00:00 UTC) before "
        "(solid) and after (dashed), one panel per capability whose answers change there, "
        "over the days in [--from, --to) (default: around the changes).",
        epilog=EXAMPLES,
        run=cmd_what_if,
        no_engine=True,  # it opens the store once the file is valid
    )
    command_file_argument(p)
    p.add_argument(
        "--from", dest="start", metavar="T", help="window start (default: the first event)"
    )
    p.add_argument("--to", dest="end", metavar="T", help="window end, excluded (default: none)")
    p.add_argument("--as-known-at", metavar="K", help="compare as known at K (default: all)")
    json_option(p, help="one JSON object (with --png: its path in `png`)")
    p.add_argument(
        "--png",
        metavar="FILE",
        help="also draw a region's daily counts per plan, before and after, into FILE",
    )
    p.add_argument(
        "--region",
        metavar="R",
        help="the region --png draws (default: the one region whose answers change)",
    )
