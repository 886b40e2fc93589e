"""Turn one run's figures into the table of benchmarks/README.md.

python -m benchmarks.report FOLDER   # with whole.json, check.json (pytest-benchmark) and pg.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def per_check_ns(check: dict[str, Any]) -> dict[str, float]:
    """Minimum round time / batch size, per benchmark name."""
    return {
        b["name"]: b["stats"]["min"] / b["extra_info"]["batch"] * 1e9 for b in check["benchmarks"]
    }


def table(folder: Path) -> str:
    whole = json.loads((folder / "whole.json").read_text())
    ns = per_check_ns(json.loads((folder / "check.json").read_text()))
    pg = json.loads((folder / "pg.json").read_text())
    floor = ns["test_floor_a_dict_of_frozen_decisions"]
    m, a, f, r = whole["memory"], whole["apply"], whole["fan_out"], whole["rebuild"]
    pa = pg["postgres_apply"]
    vis, poll = pg["visibility_postgres_listen_notify"], pg["visibility_sqlite_polling_5ms"]
    rows = [
        (
            "hot check now",
            f"{ns['test_check_now']:.0f} ns",
            f"floor (dict of frozen decisions) {floor:.0f} ns",
            f"{ns['test_check_now'] / floor:.1f}x",
            "<= 2x",
        ),
        (
            "check with `at`",
            f"{ns['test_check_at']:.0f} ns",
            f"floor {floor:.0f} ns",
            f"{ns['test_check_at'] / floor:.1f}x",
            "<= 10x",
        ),
        (
            "check with `at` + `as_known_at`",
            f"{ns['test_check_at_as_known_at']:.0f} ns",
            f"floor {floor:.0f} ns",
            f"{ns['test_check_at_as_known_at'] / floor:.1f}x",
            "<= 10x",
        ),
        (
            "pycasbin RBAC with domains (side by side)",
            f"{ns['test_pycasbin_rbac_with_domains']:.0f} ns",
            f"our hot check {ns['test_check_now']:.0f} ns",
            f"{ns['test_pycasbin_rbac_with_domains'] / ns['test_check_now']:.0f}x slower",
            "-",
        ),
        (
            "check-index memory",
            f"{m['index_bytes_per_account']} B/account",
            f"+ now-cache {m['now_cache_bytes_per_account']} B, facts {m['facts_bytes_per_account']} B",
            f"at {m['accounts']:,} accounts",
            "<= 300 B",
        ),
        (
            "bulk apply (SQLite)",
            f"{a['apply_events_per_s']:,} events/s",
            f"bare append {a['bare_append_events_per_s']:,} events/s",
            f"{a['ratio']:.2f}",
            ">= 0.8",
        ),
        (
            "bulk apply (PostgreSQL)",
            f"{pa['apply_events_per_s']:,} events/s",
            f"bare append {pa['bare_append_events_per_s']:,} events/s",
            f"{pa['ratio']:.2f}",
            ">= 0.8",
        ),
        (
            "region rule fan-out",
            f"{f['seconds']:.0f} s for {f['accounts']:,} accounts",
            f"{f['events_per_s']:,} accounts/s",
            "-",
            "<= 60 s",
        ),
        (
            "full rebuild (SQLite)",
            f"{r['events_per_s']:,} events/s ({r['events']:,} events, {r['seconds']:.0f} s)",
            f"raw read + decode {r['raw_read_decode_events_per_s']:,} events/s",
            f"{r['ratio']:.2f}",
            ">= 0.5",
        ),
        (
            "command -> visible in another process, PostgreSQL LISTEN/NOTIFY",
            f"p50 {vis['p50_ms']} ms, p99 {vis['p99_ms']} ms (of which `apply` p50 {vis['apply_p50_ms']} ms)",
            f"SQLite, polling every 5 ms: p50 {poll['p50_ms']} ms, p99 {poll['p99_ms']} ms (`apply` p50 {poll['apply_p50_ms']} ms)",
            f"after `apply` returned: p50 {vis['p50_ms'] - vis['apply_p50_ms']:.2f} ms",
            "p50 <= 10 ms",
        ),
    ]
    lines = [
        "| figure | measured | baseline, same run | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1])))
