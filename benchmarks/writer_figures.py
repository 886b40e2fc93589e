"""The writer's figures, each next to its baseline from the same run.

    python -m benchmarks.writer_figures --accounts 100000 --fan-out-accounts 200000 \
        --snapshot-accounts 200000 --json w.json

- memory: resident memory a writer process adds per account: a fresh process opens a store
  of N accounts (reading the log: no snapshot) and applies one command; RSS after, minus
  RSS before opening, over N (peak RSS too), and how long opening took;
- first command from a snapshot: a fresh process opens a store of N accounts from its
  index snapshot, answers a first check (a checking process's cold start: the baseline),
  then applies its first commands (a sign-up and a command on an existing account), then
  the same again (a warm writer's commands);
- wait behind a fan-out: a second process's single command while this one fans a region
  rule out over N accounts (the writer lock is held throughout a fan-out), against the
  same command's latency on an idle store.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.synthetic import RULE_AT, START, fill_store, region_opened, registration_events
from benchmarks.whole_process import emit
from entitlements.application.engine import Engine


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_store(url: str, n: int) -> None:
    with Engine(url, start=False) as engine:
        fill_store(engine.app, iter([region_opened("CN", START)]))
        fill_store(engine.app, registration_events(n))


def _register(account_id: str) -> dict[str, Any]:
    return {
        "command": "register_account",
        "account_id": account_id,
        "region": "US",
        "plan": "pro",
        "channel": "online",
        "effective_at": "2020-06-01",
    }


def _open_and_apply_one(url: str, out: Any) -> None:
    """A fresh writer process: RSS before opening, after opening, after one command."""
    before = rss_bytes()
    t = time.perf_counter()
    engine = Engine(url)
    open_seconds = time.perf_counter() - t
    opened = rss_bytes()
    (result,) = engine.apply([_register("memory-probe")])
    assert result.status == "applied", result.reason
    after = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.put(
        {"before": before, "opened": opened, "after": after, "peak": peak, "open": open_seconds}
    )
    engine.close()


def in_fresh_process(target: Callable[[str, Any], None], url: str) -> dict[str, Any]:
    """Run `target(url, queue)` in a fresh interpreter (spawn: nothing of this process's
    memory comes along, so its RSS is the writer's alone) and return what it put."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=target, args=(url, out))
    p.start()
    m: dict[str, Any] = out.get(timeout=1800)
    p.join(60)
    return m


def memory(n: int, folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'memory.db'}"
    make_store(url, n)
    m = in_fresh_process(_open_and_apply_one, url)
    return {
        "accounts": n,
        "rss_before_open_mb": round(m["before"] / 2**20, 1),
        "rss_after_one_command_mb": round(m["after"] / 2**20, 1),
        "bytes_per_account": round((m["after"] - m["before"]) / n),
        "bytes_per_account_opening": round((m["opened"] - m["before"]) / n),
        "peak_bytes_per_account": round((m["peak"] - m["before"]) / n),
        "open_seconds": round(m["open"], 2),
    }


def _commands(i: int) -> list[dict[str, Any]]:
    """A sign-up and a command on an account of the store (its aggregate is loaded)."""
    revoke = {
        "command": "revoke_hosting",
        "account_id": f"acct-{i:07d}",
        "reason": "audit",
        "effective_at": "2020-07-01",
    }
    return [_register(f"probe-{i}"), revoke]


def _start_from_snapshot(url: str, out: Any) -> None:
    """A fresh process on a store with a snapshot: first answer, first commands, again."""
    before = rss_bytes()
    t = time.perf_counter()
    engine = Engine(url)
    engine.check("acct-0000001", "host")
    first_answer = time.perf_counter() - t
    t = time.perf_counter()
    results = engine.apply(_commands(2))
    first_commands = time.perf_counter() - t
    assert [r.status for r in results] == ["applied"] * 2, results
    t = time.perf_counter()
    results = engine.apply(_commands(3))
    next_commands = time.perf_counter() - t
    assert [r.status for r in results] == ["applied"] * 2, results
    after = rss_bytes()
    engine.projector.stop()  # no new snapshot: the next process starts from the same one
    out.put(
        {
            "first_answer": first_answer,
            "first_commands": first_commands,
            "next_commands": next_commands,
            "rss": after - before,
        }
    )


def snapshot_start(n: int, folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'snapshot.db'}"
    make_store(url, n)
    with Engine(url) as engine:
        engine.projector.save_snapshot()
    m = in_fresh_process(_start_from_snapshot, url)
    return {
        "accounts": n,
        "open_to_first_answer_s": round(m["first_answer"], 3),
        "first_two_commands_s": round(m["first_commands"], 3),
        "next_two_commands_s": round(m["next_commands"], 3),
        "first_commands_vs_first_answer": round(m["first_commands"] / m["first_answer"], 2),
        "rss_bytes_per_account": round(m["rss"] / n),
    }


def _second_writer(url: str, ready: Any, go: Any, out: Any, probes: int) -> None:
    """Another process: single commands on an idle store, then one during the fan-out."""
    with Engine(url) as engine:
        idle = []
        for i in range(probes):
            t = time.perf_counter()
            engine.apply([_register(f"idle-{i}")])
            idle.append(time.perf_counter() - t)
        ready.set()
        go.wait(600)
        time.sleep(0.2)  # the fan-out has taken the lock by now
        t = time.perf_counter()
        (r,) = engine.apply([_register("during-fan-out")])
        waited = time.perf_counter() - t
        out.put({"idle": idle, "during": waited, "status": r.status, "at": time.time()})


def wait_behind_fan_out(n: int, folder: Path, probes: int = 10) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'wait.db'}"
    make_store(url, n)
    with Engine(url) as engine:
        ctx = mp.get_context("spawn")
        ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
        other = ctx.Process(target=_second_writer, args=(url, ready, go, out, probes))
        other.start()
        ready.wait(1800)
        engine.catch_up()
        rule = {
            "command": "apply_region_rule",
            "region": "CN",
            "rule": "free_hosting_suspended",
            "effective_at": RULE_AT.isoformat(),
        }
        go.set()
        t = time.perf_counter()
        (result,) = engine.apply([rule])
        fan_out_seconds = time.perf_counter() - t
        fan_out_ended = time.time()
        assert result.status == "applied", result.reason
        m = out.get(timeout=1800)
        other.join(60)
    return {
        "accounts": n,
        "fan_out_seconds": round(fan_out_seconds, 2),
        "other_writer_command_during_fan_out_s": round(m["during"], 2),
        "other_writer_done_after_fan_out_ms": round((m["at"] - fan_out_ended) * 1000, 1),
        "other_writer_command_idle_p50_ms": round(statistics.median(m["idle"]) * 1000, 2),
        "status": m["status"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000, help="memory: store size")
    parser.add_argument("--fan-out-accounts", type=int, default=20_000)
    parser.add_argument("--snapshot-accounts", type=int, default=20_000)
    parser.add_argument("--only", choices=("memory", "wait", "snapshot"), action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    only = set(args.only or ("memory", "wait", "snapshot"))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "memory" in only:
            figures["writer_memory"] = memory(args.accounts, Path(tmp))
        if "wait" in only:
            figures["wait_behind_fan_out"] = wait_behind_fan_out(args.fan_out_accounts, Path(tmp))
        if "snapshot" in only:
            figures["first_command_from_snapshot"] = snapshot_start(
                args.snapshot_accounts, Path(tmp)
            )
    return emit(figures, args.json)


if __name__ == "__main__":
    main()
