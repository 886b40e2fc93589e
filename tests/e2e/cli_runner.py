"""The command line run in this process: the console script's own `run(argv)`, with its
stdout, stderr, environment and working directory as a process would have them.

Starting `entitlements` costs half a second of imports before it does anything, and the CLI
tests run it hundreds of times; in process, the same code answers in milliseconds. What only
a real process shows is still tested through the installed console script (`CLI`): its exit
status from `main()`, `--help` from the script, a broken pipe (141), a kill halfway, `serve`,
the progress bar on a terminal, and every README example.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from entitlements.cli.app import run
from tests.conftest import CLI


@contextlib.contextmanager
def _environ(env: Mapping[str, str] | None) -> Iterator[None]:
    """`os.environ` as `env` (None: unchanged) while the command runs, then as it was."""
    if env is None:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def entitlements(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | str | None = None
) -> subprocess.CompletedProcess[str]:
    """`entitlements ARGS` as `subprocess.run([CLI, *args], capture_output=True, text=True,
    env=env, cwd=cwd)` would give it: the exit status (argparse's own exits included),
    stdout and stderr."""
    out, errs = io.StringIO(), io.StringIO()
    with (
        _environ(env),
        contextlib.chdir(cwd or os.getcwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(errs),
    ):
        try:
            code = run(list(args))
        except SystemExit as e:  # argparse: --help (0), a usage error (2)
            code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return subprocess.CompletedProcess([CLI, *args], code, out.getvalue(), errs.getvalue())
