"""Every example a command's `--help` teaches runs as shown on the demo's store (the
china-2020 file applied) and succeeds: a reader who copies one from the help gets an
answer, not an error (issue 17, item 15: `audit verify --help` showed an elided receipt)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from entitlements.cli import build_parser
from tests.conftest import scenario_file
from tests.e2e.cli_runner import entitlements

pytestmark = pytest.mark.slow

ENTITLEMENTS = str(Path(sys.executable).parent / "entitlements")
#: What makes an example a shell's to run, not one command's.
SHELL = set("|&;<>$`*")
NOT_RUN = ("entitlements serve", "entitlements demo", "entitlements apply", "entitlements rebuild")


def subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += subparsers(child)
    return found


def help_examples() -> list[str]:
    """The lines of every epilog that start with `entitlements `, a trailing backslash
    joining the next line, as a shell reads them."""
    examples: list[str] = []
    for parser in subparsers(build_parser()):
        pending = ""
        for line in (parser.epilog or "").splitlines():
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1]
                continue
            pending = ""
            if text.startswith("entitlements ") and not text.startswith(NOT_RUN):
                examples.append(text)
    return examples


def test_the_help_has_examples_to_check() -> None:
    examples = help_examples()
    assert len(examples) >= 10, examples
    assert any("--receipt" in e for e in examples), examples


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("help-examples")
    done = entitlements(
        "--db",
        str(folder / "demo.db"),
        "apply",
        str(scenario_file("china-2020.jsonl")),
        env={**os.environ, "ENTITLEMENTS_CACHE": str(folder / "cache")},
    )
    assert done.returncode == 1, done.stderr  # the file's five rejections
    return folder


@pytest.mark.parametrize("example", help_examples())
def test_every_example_in_the_help_runs_on_the_demo_store(example: str, demo_store: Path) -> None:
    env = {
        **os.environ,
        "ENTITLEMENTS_DB": str(demo_store / "demo.db"),
        "ENTITLEMENTS_CACHE": str(demo_store / "cache"),
        "PATH": f"{Path(ENTITLEMENTS).parent}:{os.environ['PATH']}",
    }
    if SHELL & set(example):  # a pipe or a redirection: as a shell runs it
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", example],
            cwd=demo_store,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    else:  # one command: in this process (cli_runner.py)
        done = entitlements(*shlex.split(example)[1:], env=env, cwd=demo_store)
    assert done.returncode == 0, f"{example}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    assert "error" not in done.stderr.lower(), done.stderr


def test_every_help_fits_the_terminal_but_its_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """A description written as one long line is wrapped (it once ran off the screen under
    an epilog's raw formatting); only an example command keeps its one line."""
    monkeypatch.setenv("COLUMNS", "100")
    for parser in subparsers(build_parser()):
        for line in parser.format_help().splitlines():
            if len(line) > 100:
                assert line.lstrip().startswith("entitlements "), (parser.prog, line)
