"""The who-can benchmark script, run tiny, so it keeps working (figures:
benchmarks/README.md)."""

from __future__ import annotations

from benchmarks import who_can_figures


def test_who_can_figures_come_out() -> None:
    figures = who_can_figures.main(["--accounts", "300", "--rounds", "1"])
    assert figures["first_page_agrees_with_check"]
    assert figures["region_accounts"] == 270
    assert 0 < figures["whole_region_listed"] < figures["region_accounts"]
    assert figures["whole_region_pages"] == 1 and figures["first_page_warm_ms"] > 0
