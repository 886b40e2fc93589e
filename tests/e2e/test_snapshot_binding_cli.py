"""The console script on a store whose index snapshot was edited on disk (two accounts'
ids swapped): `check` and `explain` answer the truth, one line on stderr says the file was
ignored (once: the process leaves a file on record behind), and `audit verify` (which reads
the log) still says intact. SQLite and PostgreSQL."""

from __future__ import annotations

import json

from entitlements import open_engine
from projections.projector import snapshot_path
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.test_cli import run
from tests.integration.test_snapshot_binding import NOTICE, swap_accounts


def test_the_cli_ignores_an_edited_snapshot_and_says_so_in_one_line(store_url: str) -> None:
    with open_engine(store_url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
        engine.projector.save_snapshot()
    swap_accounts(snapshot_path(store_url), "cn-free-01", "cn-free-02")
    checked = run(store_url, "check", "cn-free-01", "host", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["allowed"] is False
    (line,) = checked.stderr.splitlines()
    assert line.startswith(NOTICE + " index snapshot"), line
    # the refused file was replaced at the end by one on record: said once, not every time
    explained = run(store_url, "explain", "cn-free-01", "host")
    assert explained.returncode == 0, explained.stderr
    assert "HostingRevoked" in explained.stdout
    assert not [x for x in explained.stderr.splitlines() if x.startswith(NOTICE)]
    verified = run(store_url, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
