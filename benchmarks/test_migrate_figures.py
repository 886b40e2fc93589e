"""The migrate benchmark script, run tiny, so it keeps working (figures: benchmarks/README.md)."""

from __future__ import annotations

import pytest

from benchmarks import migrate_figures


@pytest.mark.postgres
@pytest.mark.slow
def test_migrate_figures_come_out_for_a_tiny_store(postgres_url: str) -> None:
    figures = migrate_figures.main(["--accounts", "30"])
    assert figures["records"] > 30
    assert figures["ratio"] > 0
    assert figures["sequential_walks_s"] > 0
