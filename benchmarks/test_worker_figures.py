"""The worker figures script, run tiny, so it keeps working (figures: benchmarks/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import worker_figures


def test_worker_figures_come_out_for_a_tiny_applied_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    out = tmp_path / "w.json"
    figures = worker_figures.main(["--accounts", "300", "--store", str(store), "--json", str(out)])
    worker, setup = figures["worker"], figures["setup"]
    assert worker["from_snapshot"]
    assert worker["open_seconds"] > 0
    assert worker["floor_dict_of_ids_bytes_per_account"] >= 0
    assert setup["command_lines"] == 300 + 100 + 1
    assert setup["applied"] > 0.9 * setup["command_lines"]  # a day's commands, mostly applied
    assert json.loads(out.read_text()) == figures
    again = worker_figures.main(["--accounts", "300", "--store", str(store)])["setup"]
    assert again["build_seconds"] == setup["build_seconds"]  # the store is built once


def test_the_day_registers_every_account_with_ids_and_actors_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "day.jsonl"
    assert worker_figures.write_commands(3000, path) == 4001
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    registered = [c["account_id"] for c in lines if c["command"] == "register_account"]
    assert sorted(registered) == [f"acct-{i:07d}" for i in range(3000)]
    kinds = {c["command"] for c in lines}
    assert {"open_subscription", "revoke_hosting", "move_to_partner", "authorize_partner"} <= kinds
    actors = [c.get("actor") for c in lines]
    assert len({a for a in actors if a and a.startswith("user:")}) > 1000  # the user's own
    assert sum(a is None for a in actors) > 400  # and none at all
    recorded = [c["recorded_at"] for c in lines]
    assert recorded == sorted(recorded)  # a day, in order
