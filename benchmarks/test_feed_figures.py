"""The change-feed figures script, run tiny, so it keeps working (figures: README)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import feed_figures


def test_feed_figures_come_out_for_a_tiny_store(tmp_path: Path) -> None:
    figures = feed_figures.main(["--accounts", "400", "--json", str(tmp_path / "f.json")])
    assert figures["feed"]["first_changes_seconds"] > 0
    assert figures["every_fact"]["every_fact_seconds"] > 0
    assert figures["feed"]["older_position_first_seconds"] > 0
    assert all(figures[k]["resident_bytes_per_account"] > 0 for k in feed_figures.KINDS)
    assert (tmp_path / "f.json").exists()
