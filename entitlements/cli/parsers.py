"""How a command group declares its parsers: a subcommand with its handler in one call,
and the options several commands share, so each is spelt (and shown by `--help`) alike."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeAlias

#: What add_subparsers() returns (not subscriptable at run time, hence the string).
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"
#: What app.run() calls for a subcommand: (the engine, or None with no_engine, the args).
Handler = Callable[[Any, argparse.Namespace], int]

FOR_MACHINES = "print JSON for machines"


def subcommand(
    sub: Subparsers,
    name: str,
    help: str,
    description: str | None = None,
    *,
    run: Handler,
    epilog: str | None = None,
    **defaults: Any,
) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, listed with `help`, whose arguments carry `run` and
    `defaults` (no_engine, lazy_index, ...) to app.run(): declaring one takes one call."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, epilog=epilog
    )
    p.set_defaults(run=run, **defaults)
    return p


def json_option(p: argparse._ActionsContainer, help: str = FOR_MACHINES) -> None:
    """`--json`: the answer as JSON on stdout, for scripts rather than people."""
    p.add_argument("--json", action="store_true", help=help)


def command_group(sub: Subparsers, name: str, *, help: str, description: str) -> Subparsers:
    """A command that is a group of actions (`audit`, `token`, `snapshot`): its parser, and
    the subparsers its required ACTION is one of, read into `<name>_command`."""
    p = sub.add_parser(name, help=help, description=description)
    actions: Subparsers = p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
    return actions
