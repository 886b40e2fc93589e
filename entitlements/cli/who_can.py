"""`entitlements who-can CAPABILITY --region R`: the reverse lookup, a page at a time."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from entitlements.application.engine import Engine
from entitlements.application.who_can import Asked
from entitlements.cli.exits import EXIT_OK
from entitlements.cli.output import out
from entitlements.cli.parsers import Subparsers, json_option

HELP = """\
The region's accounts CAPABILITY is allowed to (with --denied: refused to) at --at (default
now) as known at --as-known-at (default everything recorded), in account id order, a page of
--limit at a time. The last line gives the next page's --cursor: it pins the log position
of the first page (and its "now"), so paging while commands arrive neither skips nor repeats
anyone. Exit 2 for a bad region, capability, time or cursor, each named.

  entitlements who-can host --region CN --at 2020-05-20
  entitlements who-can host --region CN --denied --json
"""


def cmd_who_can(engine: Engine, args: argparse.Namespace) -> int:
    asked = Asked(args.capability, args.region, args.plan, args.at, args.as_known_at, args.denied)
    page = engine.queries.who_can(asked, args.limit, args.cursor)
    if args.json:
        print(json.dumps(page.as_dict()))
        return EXIT_OK
    when = f"at {args.at}" if args.at else "now"
    when += f", as known at {args.as_known_at}" if args.as_known_at else ""
    verb = "refused" if args.denied else "allowed"
    plan = f", plan {args.plan}" if args.plan else ""
    heading = (
        f"{args.region}: {args.capability} {verb}, {when}{plan} (log position {page.position})"
    )
    out.print(escape(heading), soft_wrap=True)  # one line, not wrapped to the table's width
    table = Table()
    for col in ("account", "plan", "allowed", "value"):
        table.add_column(col)
    for row in page.rows:
        cells: list[Any] = [row.account_id, row.plan or "-", "yes" if row.allowed else "no"]
        table.add_row(*(escape(str(c)) for c in [*cells, "" if row.value is None else row.value]))
    out.print(table)
    if page.next_cursor:
        out.print(f"next page: --cursor {page.next_cursor}", soft_wrap=True)
    else:
        out.print(f"{len(page.rows)} account(s); the last page")
    return EXIT_OK


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "who-can",
        help="the region's accounts a capability is allowed (or refused) to, paged",
        description=HELP,
        run=cmd_who_can,
    )
    p.add_argument("capability", help="whatever `check` takes (host, join, ...)")
    p.add_argument("--region", required=True, help="the region, e.g. CN")
    p.add_argument("--plan", help="only accounts on this plan at --at")
    p.add_argument("--at", metavar="T", help="effective time (default now, pinned by the cursor)")
    p.add_argument("--as-known-at", metavar="K", help="as recorded by K (default everything)")
    p.add_argument("--denied", action="store_true", help="list the refused instead")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="accounts a page (100)")
    p.add_argument("--cursor", metavar="C", help="the next page: a page's cursor")
    json_option(p, help="for machines")
