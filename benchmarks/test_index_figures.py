"""The check-index figures script, run tiny, so it keeps working (figures: README)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import index_figures


def test_index_figures_come_out_for_a_tiny_world(tmp_path: Path) -> None:
    figures = index_figures.main(["--accounts", "300", "--json", str(tmp_path / "i.json")])["index"]
    assert figures["from_snapshot"]
    assert figures["cold_start_seconds"] > 0
    assert figures["resident_floor_dict_of_ids_bytes_per_account"] >= 0
    assert figures["first_command_seconds"] > 0
