"""The writer's figures, run tiny, so the script keeps working (figures: README)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import writer_figures


def test_writer_figures_come_out_for_a_tiny_store(tmp_path: Path) -> None:
    figures = writer_figures.main(
        [
            "--accounts",
            "300",
            "--snapshot-accounts",
            "300",
            "--only",
            "memory",
            "--only",
            "snapshot",
            "--json",
            str(tmp_path / "w.json"),
        ]
    )
    assert figures["writer_memory"]["bytes_per_account"] > 0
    assert figures["writer_memory"]["open_seconds"] > 0
    started = figures["first_command_from_snapshot"]
    assert started["open_to_first_answer_s"] > 0 and started["first_two_commands_s"] > 0
