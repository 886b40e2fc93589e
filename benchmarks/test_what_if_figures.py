"""The what-if benchmark script, run tiny, so it keeps working (figures: benchmarks/README.md)."""

from __future__ import annotations

from benchmarks import what_if_figures


def test_what_if_figures_come_out_for_a_tiny_store() -> None:
    figures = what_if_figures.main(["--accounts", "40", "--rounds", "1"])
    assert figures["fan_out_events"] > 0
    assert figures["changes"] > 0 and figures["accounts_changed"] > 0
    assert figures["ratio"] > 0
