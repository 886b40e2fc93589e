"""The README's HTTP section is a contract: its setup block runs as written (in a folder of
the test's own), and each `curl` of its console block runs against a real server and
answers what the README shows (`...` standing for what the README leaves out)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.readme import matches
from tests.e2e.servers import start_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## HTTP (`entitlements serve`), for the meeting service"


def readme_blocks() -> tuple[list[str], list[tuple[str, str]]]:
    """The section's setup lines (bash) and its (command, shown output) pairs (console)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    setup = re.search(r"```bash\n(.*?)```", section, re.S)
    console = re.search(r"```console\n(.*?)```", section, re.S)
    assert setup and console, "the HTTP section lost its setup or console block"
    lines = console.group(1).splitlines()
    pairs = [(lines[i][2:], lines[i + 1]) for i in range(0, len(lines), 2)]
    assert all(c.startswith("curl ") for c, _ in pairs) and pairs, lines
    return setup.group(1).splitlines(), pairs


def test_every_curl_in_the_readme_answers_as_shown(tmp_path: Path) -> None:
    setup, pairs = readme_blocks()
    serve = [line for line in setup if line.startswith("entitlements serve ")]
    assert len(serve) == 1 and "--workers 2" in serve[0]
    (tmp_path / "entitlements").mkdir()
    (tmp_path / "entitlements" / "scenarios").symlink_to(ROOT / "entitlements" / "scenarios")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = [line for line in setup if line not in serve]
    script.append('printf "%s\\n%s\\n%s\\n" "$ENTITLEMENTS_DB" "$TOKEN" "$ADMIN"')
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],  # as pasted: `apply` exits 1 (5 rejected)
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    url, token, admin = done.stdout.split()
    assert url == f"sqlite:///{tmp_path}/story.db" and token.startswith("ent_")
    process, base = start_server(url, workers=2, cache=tmp_path)
    try:
        for command, shown in pairs:
            answer = subprocess.run(
                ["bash", "-c", command.replace("localhost:8080", base.removeprefix("http://"))],
                env={**env, "TOKEN": token, "ADMIN": admin},
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            assert matches(shown, json.dumps(json.loads(answer))), (command, answer)
    finally:
        process.terminate()
        process.wait(30)
