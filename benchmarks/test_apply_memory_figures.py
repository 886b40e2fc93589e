"""The apply memory benchmark, run tiny and untimed, so it keeps working (figures: README)."""

from __future__ import annotations

from benchmarks import apply_memory_figures


def test_apply_memory_figures_come_out_for_a_tiny_file() -> None:
    figures = apply_memory_figures.main(["--lines", "300"])
    (run,) = figures["runs"]
    assert run["apply"]["code"] == 0 and run["validate_refused_at_last_line"]["code"] == 2
    assert run["apply"]["peak_mb"] > run["floor_python_pass"]["peak_mb"] > 0
