"""The change feed's figures in a checking process, each next to a baseline of the same run.

    python -m benchmarks.feed_figures --accounts 100000 --json feed.json

A store of N synthetic accounts (index_figures' store: four regions, every plan, one
AccountRegistered each, and its index snapshot) is opened by fresh interpreters, each
from the snapshot, each checking every account once ("host", now) as an HTTP worker does,
then applying a few commands (hosting revoked on 100 accounts, its own):

- feed: a first /v1/changes-like call, `engine.changes(after=head)` (it starts the feed),
  before the commands, then the commands' changes read back from the feed;
- no feed (the baseline): the same without ever asking for changes;
- every Fact: builds every account's Facts (`projector.facts`, what starting the feed did
  before it worked on the light log), then the same first call.

Figures: resident memory growth per account (RSS from before `open_engine` to the end,
/proc/self/statm) of each; the first call's seconds against building every Fact (same
run); and `engine.changes` for a position older than the feed (after = N / 2: the log after
it, each account's own stream, the region events read once), first and again, against
reading and decoding the whole log (what the old changes_after did at the least).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.index_figures import make_store, rss, run_child
from benchmarks.synthetic import account_ids

COMMANDS = 100  # hosting revocations applied by every child, the same ones
KINDS = ("no_feed", "feed", "every_fact")


def _revocations(n: int, kind: str) -> list[dict[str, Any]]:
    """Each child's own accounts (the store keeps what a child applied; the next child
    catches up with it after the snapshot: a few hundred events)."""
    ids = account_ids(n)
    step = max(len(ids) // COMMANDS, len(KINDS))
    return [
        {
            "command": "revoke_hosting",
            "account_id": a,
            "reason": "audit",
            "effective_at": "2021-01-01",
            "recorded_at": "2021-01-01",
        }
        for a in ids[KINDS.index(kind) :: step][:COMMANDS]
    ]


def child(kind: str, url: str, n: int) -> dict[str, Any]:
    """Run in a fresh process: open from the snapshot, check every account, then `kind`."""
    from entitlements import open_engine

    ids = account_ids(n)  # made before measuring: the ids are the caller's, not the index's
    commands = _revocations(n, kind)
    gc.collect()
    before = rss()
    engine = open_engine(url)
    assert engine.projector._snapshot_position > 0, "not opened from the snapshot"
    for a in ids:
        engine.check(a, "host")
    head = engine.position()
    figures: dict[str, Any] = {}
    if kind == "every_fact":
        t = time.perf_counter()
        assert engine.projector.facts.position == head
        figures["every_fact_seconds"] = round(time.perf_counter() - t, 3)
    if kind in ("feed", "every_fact"):
        t = time.perf_counter()
        assert engine.changes(after=head) == ([], head)
        figures["first_changes_seconds"] = round(time.perf_counter() - t, 4)
    results = engine.apply(commands)
    assert all(r.status == "applied" for r in results), results[0]
    if kind in ("feed", "every_fact"):
        items, _ = engine.changes(after=head, limit=10 * COMMANDS)
        assert len(items) == 3 * COMMANDS, len(items)  # host and its two limits, each
    gc.collect()
    grown = rss() - before
    figures["resident_bytes_per_account"] = round(grown / n)
    if kind == "feed":  # a position older than the feed: from the store
        old = n // 2
        t = time.perf_counter()
        items, _ = engine.changes(after=old, limit=100)
        figures["older_position_first_seconds"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        again, _ = engine.changes(after=old + 1, limit=100)
        figures["older_position_again_seconds"] = round(time.perf_counter() - t, 3)
        assert items and again and items[0] != again[0]
    engine.close()
    return {kind: figures}


def whole_log_seconds(url: str) -> float:
    """Read and decode the whole log, nothing else: the least the old changes_after did
    for a position older than the feed."""
    from entitlements.application.engine import Engine
    from projections.log_reader import read_log

    with Engine(url, start=False) as engine:
        t = time.perf_counter()
        for _ in read_log(engine.app, 0):
            pass
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # kind, store URL
    args = parser.parse_args(argv)
    if args.child:
        measured = child(args.child[0], args.child[1], args.accounts)
        print(json.dumps(measured))
        return measured
    figures: dict[str, Any] = {"accounts": args.accounts}
    with tempfile.TemporaryDirectory() as tmp:
        url, setup = make_store(args.accounts, Path(tmp))
        figures["setup"] = setup
        for kind in KINDS:
            command = [sys.executable, "-m", "benchmarks.feed_figures", "--child", kind, url]
            figures.update(run_child(command + ["--accounts", str(args.accounts)]))
        figures["whole_log_read_seconds"] = round(whole_log_seconds(url), 2)
    feed, none = figures["feed"], figures["no_feed"]
    figures["feed_minus_no_feed_bytes_per_account"] = (
        feed["resident_bytes_per_account"] - none["resident_bytes_per_account"]
    )
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return figures


if __name__ == "__main__":
    main()
