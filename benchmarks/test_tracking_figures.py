"""The ProjectionRunner comparison (benchmarks/tracking_figures.py), run tiny."""

from __future__ import annotations

import pytest

from benchmarks import tracking_figures


@pytest.mark.postgres
def test_tracking_figures_come_out(postgres_url: str) -> None:
    figures = tracking_figures.main(["--accounts", "50"])["tracking"]
    assert figures["events"] == 51
    assert figures["runner_events_per_s"] > 0 and figures["ours_events_per_s"] > 0
