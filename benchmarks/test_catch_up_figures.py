"""The catch-up benchmark script, run tiny, so it keeps working (figures: README)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import catch_up_figures


def test_catch_up_figures_come_out_for_a_tiny_world(tmp_path: Path) -> None:
    figures = catch_up_figures.main(
        ["--accounts", "50", "--rounds", "1", "--store", str(tmp_path / "s.db")]
    )
    (round_,) = figures["rounds"]
    assert (
        figures["events"]
        == 2 * 50 + 4 + round_["new_account"]["events"] + round_["old_account"]["events"]
    )
    assert round_["new_account"]["events"] == 2  # the registration and its command record
    assert round_["old_account"]["events"] == 3  # the plan, hosting back, the record
    for kind in ("whole_log_raw", "nothing_new", "new_account", "old_account"):
        assert round_[kind]["wall_s"] > 0
