"""The `entitlements` command line: apply command files, check, audit, rebuild, demo.

Exit codes: 0 ok; 1 a command was rejected by a domain rule; 2 malformed input (nothing
applied); 3 unknown account; 4 the store failed (or holds a damaged record); 5
--min-position not reached in time; 6 an audit found a violation; 141 stdout's reader went
away, any command (`| head`; what `apply` printed was applied).

One module per command group, each with its parser, handlers and rendering: `apply`,
`checks` (check, capabilities, history, explain), `audit`, `read_models` (rejections,
rebuild, catch-up, report, reconcile), `tokens`, `serve`, `migrate`, `demo`; `app` assembles them
(run, main), `parsers` the options they share, `output` is where they print, `exits`
their exit codes.
"""

from __future__ import annotations

from entitlements.cli.app import build_parser, main, run
from entitlements.cli.apply import PROGRESS_FROM, FileChanged
from entitlements.cli.apply import _second_pass as _second_pass
from entitlements.cli.demo import scenario_path
from entitlements.cli.exits import (
    EXIT_BROKEN_PIPE,
    EXIT_MALFORMED,
    EXIT_NOT_REACHED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_STORE,
    EXIT_UNKNOWN_ACCOUNT,
    EXIT_VIOLATION,
)
from entitlements.cli.output import err, out
from entitlements.cli.serve import port_number, positive_float, positive_int

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_MALFORMED",
    "EXIT_NOT_REACHED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_STORE",
    "EXIT_UNKNOWN_ACCOUNT",
    "EXIT_VIOLATION",
    "PROGRESS_FROM",
    "FileChanged",
    "build_parser",
    "err",
    "main",
    "out",
    "port_number",
    "positive_float",
    "positive_int",
    "run",
    "scenario_path",
]
