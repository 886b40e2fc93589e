"""The daily-counts benchmark script, run tiny on SQLite and PostgreSQL, so it keeps
working (figures: benchmarks/README.md)."""

from __future__ import annotations

import pytest

from benchmarks import daily_counts_figures


def test_daily_counts_figures_come_out_on_sqlite() -> None:
    figures = daily_counts_figures.main(["--accounts", "200", "--rounds", "1"])
    assert figures["store"] == "sqlite" and figures["table_agrees"]
    assert figures["view_rows_cn_host"] > 0 and figures["now_seconds"] > 0


@pytest.mark.postgres
def test_daily_counts_figures_come_out_on_postgres(postgres_url: str) -> None:
    figures = daily_counts_figures.main(["--accounts", "200", "--rounds", "1", "--postgres"])
    assert figures["store"] == "postgresql" and figures["table_agrees"]
    assert figures["view_rows_cn_host"] > 0
