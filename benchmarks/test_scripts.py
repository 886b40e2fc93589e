"""The whole-process benchmark scripts, run tiny, so they keep working (figures: README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import postgres_figures, whole_process


def test_whole_process_figures_come_out_for_a_tiny_world(tmp_path: Path) -> None:
    figures = whole_process.main(
        ["--accounts", "200", "--apply-accounts", "30", "--json", str(tmp_path / "f.json")]
    )
    assert figures["apply"]["applied"] == figures["apply"]["commands"]
    # RegionOpened, 200 sign-ups, the rule and its record, 200 revocations, FanOutCompleted
    assert figures["rebuild"]["events"] == 2 * 200 + 4
    assert figures["memory"]["index_bytes_per_account"] > 0


@pytest.mark.postgres
@pytest.mark.timing  # a watcher process must see each flip within 30 s
def test_postgres_figures_come_out(postgres_url: str) -> None:
    figures = postgres_figures.main(["--apply-accounts", "20", "--flips", "4"])
    assert figures["postgres_apply"]["applied"] == figures["postgres_apply"]["commands"]
    assert figures["visibility_postgres_listen_notify"]["p50_ms"] > 0
