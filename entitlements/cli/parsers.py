"""How a command group declares its parsers: the options several commands share, so each
is spelt (and shown by `--help`) alike, and a command made of actions.

A subcommand's parser comes from `sub.add_parser(name, help=..., description=..., run=...)`:
app.py's parser class takes the handler, and how to open the store for it, with the texts."""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias

#: What add_subparsers() returns (not subscriptable at run time, hence the string).
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"

FOR_MACHINES = "print JSON for machines"


def json_option(p: argparse._ActionsContainer, help: str = FOR_MACHINES) -> None:
    """`--json`: the answer as JSON on stdout, for scripts rather than people."""
    p.add_argument("--json", action="store_true", help=help)


def command_group(sub: Subparsers, name: str, *, help: str, description: str) -> Subparsers:
    """A command that is a group of actions (`audit`, `token`, `snapshot`): its parser, and
    the subparsers its required ACTION is one of, read into `<name>_command`."""
    p = sub.add_parser(name, help=help, description=description)
    actions: Subparsers = p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
    return actions
