"""Where the command line prints: stdout's and stderr's consoles, the progress bars, and
the small renderers several groups share (so each answer looks the same everywhere)."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from entitlements.domain.decisions import Decision
from entitlements.domain.rules import LIMIT_CAPABILITIES


class _Out(Console):
    """stdout's console: a reader gone away raises BrokenPipeError for main() to end with
    141, as for every command (rich's default exits 1, silently)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "stdout's reader went away")


# Data is printed through escape() (or as plain JSON): an account, partner or reason may
# contain "[/]" or ":smile:", which rich would otherwise read as markup or emoji codes.
out = _Out(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, emoji=False)


def yes_no(d: Decision) -> str:
    """The answer, coloured: a limit shows its value, any other capability yes or no."""
    if d.capability in LIMIT_CAPABILITIES:
        return f"[green]{d.value}[/]" if d.allowed else "[red]0[/]"
    return "[green]yes[/]" if d.allowed else "[red]no[/]"


def given_id(command_id: str | None) -> str | None:
    """A command_id someone gave, to show people; derived ones (auto:, api:) say nothing
    a person can use, and stay in the JSON."""
    if command_id is None or command_id.startswith(("auto:", "api:")):
        return None
    return f"({command_id})"


def asked_by(record: dict[str, Any]) -> str:
    """Who asked: the actor and the command_id they gave, as far as either is known."""
    return " ".join(x for x in (record.get("actor"), given_id(record.get("command_id"))) if x)


def apply_progress(disable: bool) -> Progress:
    """`apply`'s bar on stderr: lines applied of the file's, gone when it ends."""
    return Progress(
        TextColumn("[bold]apply[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=disable,
        redirect_stdout=False,  # the results are stdout's, whatever stderr is (`> file`)
        redirect_stderr=False,
    )


class Bars:
    """Progress bars on stderr, one line each, all labelled `label`: a bar appears at its
    first update, so a run with nothing to count shows none."""

    def __init__(self, label: str) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{label}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
            redirect_stdout=False,  # stdout stays the data's, even when stderr is a terminal
            redirect_stderr=False,
        )
        self.started = False

    def bar(
        self, unit: Callable[[], str], offset: Callable[[], int] = lambda: 0
    ) -> Callable[[int, int], None]:
        """An update(done, total) for one bar, counting from `offset` (read at the first
        update); its `unit` is read then too."""
        shown: list[TaskID] = []
        base: list[int] = []

        def update(done: int, total: int) -> None:
            if not shown:
                if not self.started:
                    self.progress.start()
                    self.started = True
                base.append(offset())
                shown.append(self.progress.add_task("", total=None, unit=unit(), rate=""))
            task = self.progress.tasks[shown[0]]
            elapsed = task.elapsed or 0
            counted = done - base[0]
            rate = f"{counted / elapsed:,.0f}/s" if elapsed > 0.1 else ""
            self.progress.update(shown[0], completed=counted, total=total - base[0], rate=rate)

        return update

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
