"""How a command group declares its parsers: the options several commands share, so each
is spelt (and shown by `--help`) alike, and a command made of actions.

A subcommand's parser comes from `sub.add_parser(name, help=..., description=..., run=...)`:
app.py's parser class takes the handler, and how to open the store for it, with the texts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeAlias

#: What add_subparsers() returns (not subscriptable at run time, hence the string).
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"

#: A command's declaration: adds its parser (and its actions') to the subparsers given.
Declare: TypeAlias = Callable[[Subparsers], None]

FOR_MACHINES = "print JSON for machines"


def json_option(p: argparse._ActionsContainer, help: str = FOR_MACHINES) -> None:
    """`--json`: the answer as JSON on stdout, for scripts rather than people."""
    p.add_argument("--json", action="store_true", help=help)


def as_known_at_option(p: argparse._ActionsContainer) -> None:
    """--as-known-at K: the recorded-time clock, as check, explain and report ask it."""
    p.add_argument(
        "--as-known-at", metavar="K", help="only what was recorded by K (default: everything)"
    )


def region_argument(p: argparse._ActionsContainer) -> None:
    """REGION, as the region audits and report take it."""
    p.add_argument("region", metavar="REGION", help="a region code, e.g. CN")


def command_file_argument(p: argparse._ActionsContainer) -> None:
    """The command file `apply` records and `what-if` tries: the same FILE for both."""
    p.add_argument("file", help="the command file, one JSON command per line")


def command_group(sub: Subparsers, name: str, *, help: str, description: str) -> Subparsers:
    """A command that is a group of actions (`audit`, `token`, `snapshot`): its parser, and
    the subparsers its required ACTION is one of, read into `<name>_command`."""
    p = sub.add_parser(name, help=help, description=description)
    actions: Subparsers = p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
    return actions
