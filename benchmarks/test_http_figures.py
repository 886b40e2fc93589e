"""The HTTP benchmark script, run tiny and untimed with the Python client, so it keeps
working (figures: README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import http_figures


@pytest.mark.slow
@pytest.mark.timing  # a real server under load for a second, no errors allowed
def test_http_figures_come_out_for_a_tiny_world(tmp_path: Path) -> None:
    figures = http_figures.main(
        [
            "--accounts",
            "200",
            "--seconds",
            "1",
            "--workers",
            "1",
            "--client",
            "python",
            "--commands",
            "4",
            "--json",
            str(tmp_path / "http.json"),
        ]
    )
    assert figures["setup"]["load_tool"].startswith("python")
    assert figures["can_host"]["requests_per_s"] > 0 and figures["can_host"]["errors"] == 0
    assert figures["can_host"]["baseline_ping"]["requests_per_s"] > 0
    assert figures["batch"]["decisions_per_s"] > 0 and figures["batch"]["errors"] == 0
    assert figures["changes_sqlite"]["commands"] == 4 and figures["changes_sqlite"]["p50_ms"] > 0
    assert (tmp_path / "http.json").exists()
