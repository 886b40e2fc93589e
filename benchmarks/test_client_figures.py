"""The client figures script, run tiny, so it keeps working (figures: README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import client_figures


@pytest.mark.slow
def test_client_figures_come_out_for_a_tiny_store(tmp_path: Path) -> None:
    figures = client_figures.main(
        ["--accounts", "300", "--commands", "5", "--up", "0", "--json", str(tmp_path / "c.json")]
    )
    assert figures["client_check_seconds"] > 0 and figures["engine_check_seconds"] > 0
    assert figures["commands"] == 5 and figures["command_to_answer_p99_seconds"] > 0
    assert (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_clients_on_two_workers_each_receive_every_record_once_in_order() -> None:
    figures = client_figures.main(
        ["--clients", "3", "--accounts", "200", "--seconds", "1", "--rate", "5", "--up", "0.5"]
    )
    assert figures["every_client_every_record_once_in_order"] and figures["records_checked"] > 0
    assert figures["bare_streams_attached"]["records_checked"] > 0
    for window in ("none_attached", "bare_streams_attached", "attached", "none_again"):
        assert figures[window]["check_p99_ms"] > 0 and figures[window]["commands"] > 0
