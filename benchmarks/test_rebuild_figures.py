"""The rebuild benchmark script, run tiny, so it keeps working (figures: README)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import rebuild_figures


def test_rebuild_figures_come_out_for_a_tiny_world(tmp_path: Path) -> None:
    figures = rebuild_figures.main(
        ["--accounts", "50", "--rounds", "1", "--store", str(tmp_path / "s.db")]
    )
    assert figures["events"] == 2 * 50 + 4
    (round_,) = figures["rounds"]
    for kind in ("rebuild_two_processes", "rebuild_one_process"):
        assert round_[kind]["wall_s"] > 0 and round_[kind]["ratio"] > 0
