"""The HTTP benchmark script, run tiny and untimed with the Python client, so it keeps
working (figures: README). Every phase runs, small: the floor rounds, the batch, a few
long-polls beside checks, commit -> long-poll; the uvicorn comparison only if installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import http_figures


@pytest.mark.slow
@pytest.mark.timing  # real servers under load for a moment, no errors allowed
def test_http_figures_come_out_for_a_tiny_world(tmp_path: Path) -> None:
    argv = ["--accounts", "200", "--seconds", "0.5", "--rounds", "1", "--workers", "1"]
    argv += ["--client", "python", "--long-polls", "10", "--commands", "4"]
    argv += ["--worker-accounts", "300", "--worker-store", str(tmp_path / "applied")]
    figures = http_figures.main([*argv, "--json", str(tmp_path / "http.json")])
    assert figures["setup"]["load_tool"].startswith("python")
    assert figures["setup"]["store"].startswith("applied")
    floor = figures["check_vs_floor"]
    assert floor["check_requests_per_s_median"] > 0 and floor["floor_requests_per_s_median"] > 0
    assert floor["median_ratio"] > 0 and all(r["errors"] == 0 for r in floor["rounds"])
    assert figures["p99_at_4_connections"]["floor_p99_ms_median"] > 0
    batch = figures["batch_of_100"]
    assert batch["decisions_per_s"] > 0 and batch["errors"] == 0
    polls = figures["check_with_long_polls"]
    assert polls["answered_before_the_load"] == 0 and polls["still_waiting_after_the_load"] == 10
    assert polls["one_command_wakes_them"]["answered_with_the_change"] == 10
    assert polls["check"]["check_errors"] == 0
    changes = figures["commit_to_long_poll_sqlite"]
    assert changes["commands"] == 4 and changes["from_post_p50_ms"] > 0
    assert figures["granian_vs_uvicorn"]["note"].startswith("skipped")
    worker = figures["worker_memory"]
    assert worker["accounts"] == 300 and worker["spawn_to_ready_seconds"] > 0
    assert worker["floor_dict_of_ids_bytes_per_account"] >= 0  # a few ids: pages already there
    assert json.loads((tmp_path / "http.json").read_text())["setup"]["accounts"] == 200
