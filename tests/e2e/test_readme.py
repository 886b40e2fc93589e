"""The README is a contract (issue 17): every shell and Python example in it runs, in the
order a reader meets it, in one shell session in a folder of the test's own, and prints
what the README shows where it shows anything.

- a `bash` block runs as written (its exports and working folder carry on);
- a `console` or `text` block's `$ command` lines run, each compared with the lines shown
  after it (stdout and stderr as a terminal shows them; spacing aside; `...` stands for what
  the README leaves out);
- a `python` block runs as a script, and a line `expression  # value` whose comment is a
  Python literal checks that the expression gives that value;
- a block after `<!-- not run: why -->` is not run (installing, the test suite itself);
  the HTTP section's blocks run against a real server in test_readme_http.py, and the SQL
  ones against both stores in tests/integration/test_readme_sql.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.readme import Block, Example, blocks, examples, matches, python_checked

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MARK = "@@@ example "
HTTP_SECTION = "## HTTP (`entitlements serve`)"


def runnable() -> list[Block]:
    """The blocks to run, in order (the HTTP section's are test_readme_http.py's)."""
    text = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith(HTTP_SECTION))
    end = next(i for i in range(start + 1, len(text)) if text[i].startswith("## "))
    return [
        b
        for b in blocks()
        if b.not_run is None
        and b.language in ("bash", "console", "text", "python")
        and not start < b.line < end
        and (b.language in ("bash", "python") or examples(b))
    ]


def set_up() -> list[str]:
    """The set-up block's commands after the install (the demo's store): the test runs in a
    virtualenv made already, so it runs these (not `pip install`), as the README has them."""
    first = next(b for b in blocks() if b.language == "bash")
    assert first.not_run is not None and "pip install" in first.text, first
    commands = [c.strip() for line in first.text.splitlines() for c in line.split("&&")]
    ours = [c for c in commands if c.startswith(".venv/bin/entitlements ")]
    assert any(" demo --db demo.db" in c for c in ours), ours
    return ours


def session(folder: Path) -> tuple[str, list[Example]]:
    """One bash script: the set-up's own commands, then every runnable block, each shown
    example behind a marker line; and the examples in order."""
    script = ["__rc=0", *(f"{c} > /dev/null || exit 96" for c in set_up())]
    shown: list[Example] = []
    for number, block in enumerate(runnable()):
        if block.language == "bash":  # its output is not shown: kept aside; a failure ends it
            script.append(f"trap 'echo \"README line {block.line}: $BASH_COMMAND failed\" >&2' ERR")
            script.append(f"set -e\n{{ {block.text}\n}} >> readme-bash-blocks.log 2>&1\nset +e")
            script.append("trap - ERR")
        elif block.language == "python":
            path = folder / f"readme-{number}.py"
            path.write_text(python_checked(block.text))
            script.append(f"python {path} || exit 97")
        else:
            for example in examples(block):
                script.append(f"printf '\\n{MARK}%d\\n' {len(shown)}")
                script.append(f"(exit $__rc); {{ {example.command}\n}} 2>&1; __rc=$?")
                shown.append(example)
    script.append("exit 0")
    return "\n".join(script), shown


def test_every_example_in_the_readme_runs_and_prints_what_it_shows(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "docs").mkdir()
    (tmp_path / "entitlements").mkdir()
    (tmp_path / "entitlements" / "scenarios").symlink_to(ROOT / "entitlements" / "scenarios")
    script, shown = session(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLEMENTS_")}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        # the README's own set-up puts the venv on PATH; unbuffered: stdout and stderr in
        # the order a terminal shows them
        env={**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode != 96, f"the set-up failed:\n{done.stderr[-3000:]}"
    assert done.returncode != 97, f"a Python example failed:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"a bash block failed:\n{done.stderr[-3000:]}"
    answers = done.stdout.split(f"\n{MARK}")[1:]
    assert len(answers) == len(shown), done.stdout[-3000:] + done.stderr[-3000:]
    for answer, example in zip(answers, shown, strict=True):
        number, _, printed = answer.partition("\n")
        assert matches(example.shown, printed), (
            f"README line {example.line}: `{example.command}` printed:\n{printed}"
            f"\nthe README shows:\n{example.shown}"
        )


def test_every_link_in_the_readme_is_a_file_of_the_project() -> None:
    """A clone holds what the README points at: no `../` outside it, no missing file."""
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    assert targets
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        assert not target.startswith("../"), target
        assert (ROOT / target).exists(), f"README links to {target}, not in the project"
    assert "../shared" not in text
