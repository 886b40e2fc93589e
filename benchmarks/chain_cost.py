"""What the integrity chain costs, with and without it in the same run (alternating rounds
on fresh stores, so drift hits both sides alike), and how fast `audit verify` walks a log.

    python -m benchmarks.chain_cost --apply-accounts 3000 --fanout-accounts 100000 [--postgres]

- apply: bulk `apply` of benchmarks.whole_process's command day (group commit), commands/s;
- fan-out: `apply_region_rule free_hosting_suspended` over N free accounts, events/s;
- verify: `integrity_check.verify` over the fan-out's store, records/s.
The switch is `Engine.saver.chain` (False: events are saved unsealed, as before the chain).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.synthetic import RULE_AT, START, fill_store, region_opened, registration_events
from benchmarks.whole_process import _commands, timed
from entitlements.application import integrity_check
from entitlements.application.engine import Engine


def _url(folder: Path, name: str, postgres: bool) -> str:
    if postgres:
        from tests.conftest import fresh_postgres_schema, postgres_available

        why_not = postgres_available()
        if why_not:
            raise SystemExit(why_not)
        return fresh_postgres_schema()
    return f"sqlite:///{folder / name}"


def apply_rate(n: int, folder: Path, chain: bool, postgres: bool, i: int) -> float:
    commands = _commands(n)
    with Engine(_url(folder, f"apply-{chain}-{i}.db", postgres)) as engine:
        engine.saver.chain = chain
        seconds, _ = timed(lambda: engine.apply(commands))
    return len(commands) / seconds


def fan_out(n: int, folder: Path, chain: bool, postgres: bool, i: int) -> tuple[float, float]:
    """Fan-out events/s, and verify records/s over the resulting store."""
    with Engine(_url(folder, f"fanout-{chain}-{i}.db", postgres), start=False) as engine:
        fill_store(engine.app, iter([region_opened("CN", START)]))
        fill_store(engine.app, registration_events(n))
        engine.projector.start()
        engine.saver.chain = chain
        rule = {
            "command": "apply_region_rule",
            "region": "CN",
            "rule": "free_hosting_suspended",
            "effective_at": RULE_AT.isoformat(),
        }
        seconds, (result,) = timed(lambda: engine.apply([rule]))
        assert result.status == "applied", result.reason
        verify_seconds, v = timed(lambda: integrity_check.verify(engine.app))
        assert v.ok
        return n / seconds, engine.position() / verify_seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apply-accounts", type=int, default=3000)
    parser.add_argument("--fanout-accounts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args(argv)
    rates: dict[str, dict[bool, list[float]]] = {"apply": {True: [], False: []}, "fanout": {}}
    rates["fanout"] = {True: [], False: []}
    verify_rates: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.rounds):
            for chain in (False, True) if i % 2 == 0 else (True, False):
                rates["apply"][chain].append(
                    apply_rate(args.apply_accounts, folder, chain, args.postgres, i)
                )
                if args.fanout_accounts:
                    events, records = fan_out(args.fanout_accounts, folder, chain, args.postgres, i)
                    rates["fanout"][chain].append(events)
                    if chain:
                        verify_rates.append(records)
    out: dict[str, Any] = {"store": "postgresql" if args.postgres else "sqlite"}
    for name, by in rates.items():
        if not by[True]:
            continue
        with_chain, without = statistics.median(by[True]), statistics.median(by[False])
        out[name] = {
            "with_chain_per_s": round(with_chain),
            "without_chain_per_s": round(without),
            "ratio": round(with_chain / without, 3),
        }
    if verify_rates:
        out["verify_records_per_s"] = round(statistics.median(verify_rates))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
