"""`entitlements apply FILE`: a command file validated whole, then applied line by line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator

from entitlements.adapters.store import lasting_store_url
from entitlements.application.engine import Engine
from entitlements.cli.exits import EXIT_BROKEN_PIPE, EXIT_OK, EXIT_REJECTED, ONE_COMMAND
from entitlements.cli.output import apply_progress, err
from entitlements.cli.parsers import Subparsers, command_file_argument
from entitlements.domain.commands import (
    Command,
    MalformedCommand,
    check_command_file,
    stream_command_file,
)

PROGRESS_FROM = 200  # lines: a longer file shows a progress bar on stderr (a terminal)


class FileChanged(ValueError):
    """The command file changed between `apply`'s two passes (validate, then apply)."""


def _second_pass(path: str, total: int) -> Iterator[tuple[int, Command]]:
    """The file read again, as it is applied: a line that no longer validates, or more or
    fewer lines than the first pass counted, means it changed in between (the results
    printed before the error were applied)."""
    count = 0
    try:
        for numbered in stream_command_file(path):
            count += 1
            if count > total:
                raise FileChanged(f"{path} grew after it was validated: line {numbered[0]}")
            yield numbered
    except MalformedCommand as e:
        raise FileChanged(f"{path} changed after it was validated: {e}") from None
    if count < total:
        raise FileChanged(f"{path} shrank after it was validated: {count} of {total} commands")


def cmd_apply(_: Engine | None, args: argparse.Namespace) -> int:
    """Two passes over the file, one line at a time, so memory does not grow with its
    length: the first validates every line (a bad one refuses the file before a store is
    opened or created); the second applies them, each line's result printed (and flushed)
    as soon as it is committed: every line printed was applied, and running the file again
    reports the rest (earlier lines as duplicates, by their command_id)."""
    lasting_store_url(args.db, ONE_COMMAND)  # a URL the engine cannot use says so first
    total = check_command_file(args.file)
    if total == 0:
        return EXIT_OK  # nothing to apply: no store is created for it
    show_bar = err.is_terminal and total >= PROGRESS_FROM
    bar = apply_progress(disable=not show_bar)
    any_rejected = False
    with Engine(args.db) as engine, bar:
        task = bar.add_task("apply", total=total)
        for r in engine.apply_iter(_second_pass(args.file, total)):
            try:
                print(json.dumps(r.as_dict()), flush=True)
            except BrokenPipeError:  # the reader went away (`apply FILE | head -1`): stop here
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return EXIT_BROKEN_PIPE
            any_rejected |= r.status == "rejected"
            bar.advance(task)
    return EXIT_REJECTED if any_rejected else EXIT_OK


def add_parser(sub: Subparsers) -> None:
    """`apply`: it opens the store itself, once the file is valid."""
    p = sub.add_parser(
        "apply",
        help="apply a JSON Lines command file (validated whole first)",
        description="Validate the whole file, one line at a time (a malformed line refuses "
        "it: exit 2, nothing applied, no store created), then read it again and apply each "
        "line in order and print its JSON result as soon as it "
        "is committed. Each line is a command with a command_id (given, or derived from "
        "the line's content): run the file again after a crash, or twice, and lines "
        "already on file are reported as duplicates, nothing is recorded twice. "
        "Exit 0 if all applied, 1 if any was rejected by a domain rule.",
        run=cmd_apply,
        no_engine=True,  # it opens the store once the file is valid
    )
    command_file_argument(p)
