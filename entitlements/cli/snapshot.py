"""`entitlements snapshot export FILE`: the check index's snapshot (what GET /v1/snapshot
serves), for a client's offline start (entitlements/application/replica.py writes it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape

from entitlements.application.engine import Engine
from entitlements.application.replica import export_snapshot
from entitlements.cli.exits import EXIT_OK
from entitlements.cli.output import out
from entitlements.cli.parsers import Subparsers, command_group, json_option

EXPORT_HELP = """\
Writes the check index as it stands (every account and region, at the store's newest
position) to FILE, atomically, with its position and the integrity chain's head hash there:
what GET /v1/snapshot serves. A client (entitlements.client.Client(..., bootstrap=FILE))
starts from it with no server, then follows the server's stream from its position. The
file holds JSON and arrays of numbers, nothing that can run.

  entitlements snapshot export snapshot.index
"""


def cmd_export(engine: Engine, args: argparse.Namespace) -> int:
    """One line (or --json): the file, its position, the chain head and its SHA-256."""
    done = export_snapshot(engine, Path(args.file))
    summary = {
        "file": str(done.path),
        "position": done.position,
        "chain_head": done.chain_head,
        "sha256": done.digest,
    }
    if args.json:
        print(json.dumps(summary))
        return EXIT_OK
    out.print(
        escape(
            f"wrote the index snapshot at position {done.position} to {done.path} "
            f"(chain head {done.chain_head}, sha256 {done.digest})"
        ),
        soft_wrap=True,
    )
    return EXIT_OK


def add_parser(sub: Subparsers) -> None:
    """`snapshot export FILE`."""
    actions = command_group(
        sub,
        "snapshot",
        help="the check index's snapshot for a client's offline start: export FILE",
        description=EXPORT_HELP,
    )
    e = actions.add_parser(
        "export",
        help="write the snapshot to FILE",
        description=EXPORT_HELP,
        run=cmd_export,
    )
    e.add_argument("file", metavar="FILE", help="where to write it (replaced atomically)")
    json_option(e, help="the summary as one JSON object")
