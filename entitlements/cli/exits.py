"""The command line's exit codes, one place for every group (and scripts) to read them."""

from __future__ import annotations

EXIT_OK, EXIT_REJECTED, EXIT_MALFORMED, EXIT_UNKNOWN_ACCOUNT, EXIT_STORE, EXIT_NOT_REACHED = (
    0,
    1,
    2,
    3,
    4,
    5,
)
EXIT_VIOLATION = 6  # an audit found the log breaking a promise
EXIT_BROKEN_PIPE = 141  # as a shell reports a process its reader left (128 + SIGPIPE)

#: Why the command line refuses `memory://` (a StoreError: exit 2, as any URL it cannot use).
ONE_COMMAND = "the command line's process ends with each command"
