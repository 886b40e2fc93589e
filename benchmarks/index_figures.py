"""Check-index figures of a whole, fresh process, each next to a baseline of the same run.

    python -m benchmarks.index_figures --accounts 1000000 --json index.json

A store of N synthetic accounts (mixed regions and plans, one AccountRegistered each) is
filled straight through the recorder, one engine reads it and saves its index snapshot (as
`entitlements rebuild` leaves it), then a fresh child process measures:

- cold start: `open_engine` to the first answer, from that verified snapshot; baselines:
  the same store's start from the log without a snapshot (the parent's, same run), and
  gunzip of the same file and json.loads of its header line, nothing else (what reading
  it can cost at the least);
- resident memory: RSS growth (/proc/self/statm) from before `open_engine` to after every
  account was checked once ("host", now); baseline: the same growth for a dict of the N
  account ids (what naming the accounts costs at the least); also traced (tracemalloc)
  bytes still held, when `--traced` (slower);
- a first command, after the checks (a sign-up): decided from the index, as every process
  does (the first commands on existing accounts: benchmarks/writer_figures.py).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.synthetic import (
    ACCOUNTS,
    START,
    account_ids,
    fill_store,
    mixed_registration_events,
    region_opened,
)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def make_store(n: int, folder: Path) -> tuple[str, dict[str, Any]]:
    """A store of n accounts and its index snapshot, as `rebuild` leaves them."""
    from entitlements.application.engine import Engine

    url = f"sqlite:///{folder / 'index.db'}"
    with Engine(url, start=False) as engine:
        t = time.perf_counter()
        fill_store(engine.app, iter([region_opened(r, START) for r in ("CN", "US", "HK", "DE")]))
        fill_store(engine.app, mixed_registration_events(n))
        filled = time.perf_counter() - t
        t = time.perf_counter()
        engine.projector.start()
        from_log = time.perf_counter() - t
        t = time.perf_counter()
        engine.projector.save_snapshot()
        saved = time.perf_counter() - t
        snapshot = engine.projector.snapshot_file
    assert snapshot is not None
    return url, {
        "setup_fill_seconds": round(filled, 1),
        "setup_start_from_log_seconds": round(from_log, 2),
        "setup_save_snapshot_seconds": round(saved, 2),
        "snapshot_bytes": snapshot.stat().st_size,
    }


#: A sign-up after the checks: what a checking process that also writes pays for its first.
_FIRST_COMMAND = {
    "command": "register_account",
    "account_id": "first-command-01",
    "region": "US",
    "plan": "pro",
    "channel": "online",
    "effective_at": "2021-01-01",
}


def child(url: str, n: int, traced: bool) -> dict[str, Any]:
    """Run in a fresh process: cold start and resident growth, then the baselines."""
    import tracemalloc

    from entitlements import open_engine
    from projections.projector import snapshot_path

    ids = account_ids(n)  # made before measuring: the ids are the caller's, not the index's
    gc.collect()
    if traced:
        tracemalloc.start()
    before = rss()
    t = time.perf_counter()
    engine = open_engine(url)
    engine.check(ids[0], "host")
    cold = time.perf_counter() - t
    from_snapshot = engine.projector._snapshot_position > 0
    after_start = rss()
    for a in ids:
        engine.check(a, "host")
    gc.collect()
    after_checks = rss()
    traced_bytes = tracemalloc.get_traced_memory()[0] if traced else None
    if traced:
        tracemalloc.stop()
    t = time.perf_counter()  # a first command: decided from the index (no Fact per account)
    (result,) = engine.apply([_FIRST_COMMAND])
    first_command = time.perf_counter() - t
    assert result.status == "applied", result
    engine.close()
    del engine
    gc.collect()
    # baselines, same process, same run
    path = snapshot_path(url)
    t = time.perf_counter()
    with gzip.open(path, "rb") as f:
        json.loads(f.readline())  # the header: tables, regions, position
        f.read()  # the sections: ids, codes, times, records, members
    raw = time.perf_counter() - t
    return {
        "accounts": n,
        "from_snapshot": from_snapshot,
        "cold_start_seconds": round(cold, 3),
        "raw_gunzip_json_load_seconds": round(raw, 3),
        "cold_start_ratio_to_raw_load": round(cold / raw, 2),
        "resident_after_start_bytes_per_account": round((after_start - before) / n),
        "resident_bytes_per_account": round((after_checks - before) / n),
        "traced_bytes_per_account": round(traced_bytes / n) if traced_bytes else None,
        "first_command_seconds": round(first_command, 3),
    }


def floor(n: int) -> dict[str, Any]:
    """Run in a fresh process: RSS growth for a dict of n fresh account-id strings."""
    ids = account_ids(n)
    gc.collect()
    before = rss()
    table = {a.encode().decode(): True for a in ids}  # fresh strings, as a loader makes them
    grown = rss() - before
    assert len(table) == n
    return {"resident_floor_dict_of_ids_bytes_per_account": round(grown / n)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--traced", action="store_true", help="also tracemalloc (slower)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the store URL, in the child
    args = parser.parse_args(argv)
    if args.child:
        figures = (
            floor(args.accounts)
            if args.child == "floor"
            else child(args.child, args.accounts, args.traced)
        )
        print(json.dumps(figures))
        return figures
    with tempfile.TemporaryDirectory() as tmp:
        url, setup = make_store(args.accounts, Path(tmp))
        command = [sys.executable, "-m", "benchmarks.index_figures", "--child", url]
        command += ["--accounts", str(args.accounts)] + (["--traced"] if args.traced else [])
        figures = {"index": {**run_child(command), **setup}}
        start = figures["index"]
        start["cold_start_ratio_to_start_from_log"] = round(
            start["cold_start_seconds"] / setup["setup_start_from_log_seconds"], 3
        )
        command[command.index(url)] = "floor"
        figures["index"].update(run_child(command))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return figures


def run_child(command: list[str]) -> dict[str, Any]:
    """Run a fresh interpreter and take the JSON of its last line (its figures); a failure
    ends the script with the end of the child's stderr."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[3:5])} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()
