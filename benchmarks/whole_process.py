"""Whole-process figures, each next to its baseline measured in the same run.

    python -m benchmarks.whole_process --accounts 1000000 --json out.json

- memory: traced bytes per account of the facts, the check index (every account encoded)
  and its "now" cache (every account checked once); see also benchmarks/index_figures.py
  for the resident memory and cold start of a whole process;
- apply: bulk `apply` (validate, decide, save; group commit: many commands per
  transaction) vs eventsourcing's bare `save` of the same events, in transactions of the
  same sizes;
- fan-out: `apply_region_rule free_hosting_suspended` over N free accounts of one region;
- rebuild: `rebuild` (every read model + index snapshot) of the fan-out store vs reading
  and decoding the same rows raw (1000 rows per select).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.synthetic import (
    ACCOUNTS,
    RULE_AT,
    START,
    account_ids,
    fill_store,
    region_opened,
    registration_events,
    world_facts,
    world_index,
)
from entitlements.application.engine import Engine
from projections.rebuild import rebuild


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def memory(n: int) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    facts = world_facts(n)
    after_facts = tracemalloc.get_traced_memory()[0]
    index = world_index(facts)
    index.encode_all()  # accounts are encoded on first use: encode them all
    after_index = tracemalloc.get_traced_memory()[0]
    for account_id in facts.accounts:
        index.check(account_id, "host")
    after_now = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "accounts": n,
        "facts_bytes_per_account": round(after_facts / n),
        "index_bytes_per_account": round((after_index - after_facts) / n),
        "now_cache_bytes_per_account": round((after_now - after_index) / n),
    }


def _commands(n: int) -> list[dict[str, Any]]:
    """A day in the life: rules and partners, then registrations and account changes."""
    t = START
    cmds: list[dict[str, Any]] = []

    def add(**c: Any) -> None:
        nonlocal t
        t += timedelta(seconds=1)
        cmds.append({**c, "effective_at": t.isoformat(), "recorded_at": t.isoformat()})

    add(command="apply_region_rule", region="CN", rule="free_hosting_suspended")
    add(command="authorize_partner", region="CN", partner="Systec Umeet")
    for i, a in enumerate(account_ids(n)):
        region = ("CN", "US")[i % 2]
        plan = ("free", "pro")[(i // 2) % 2]
        add(command="register_account", account_id=a, region=region, plan=plan, channel="online")
        if i % 3 == 0:
            add(command="open_subscription", account_id=a, plan="business", channel="direct")
        if i % 5 == 0:
            add(command="revoke_hosting", account_id=a, reason="audit")
    return cmds


def apply_vs_bare(n: int, folder: Path, urls: tuple[str, str] | None = None) -> dict[str, Any]:
    """Bulk `apply` against eventsourcing's bare `save` of the very events it recorded, in
    transactions of the same sizes (the engine's group commit: the recorder is watched
    during the apply, and the bare side saves the same events in the same slices)."""
    apply_url, bare_url = urls or (
        f"sqlite:///{folder / 'apply.db'}",
        f"sqlite:///{folder / 'bare.db'}",
    )
    commands = _commands(n)
    with Engine(apply_url) as engine:
        sizes: list[int] = []
        insert = engine.app.recorder.insert_events

        def watched(stored_events: Any, **kwargs: Any) -> Any:
            sizes.append(len(stored_events))
            return insert(stored_events, **kwargs)

        engine.app.recorder.insert_events = watched  # type: ignore[method-assign]
        seconds, results = timed(lambda: engine.apply(commands))
        notifications = engine.app.recorder.select_notifications(start=1, limit=10**9)
        events = [engine.app.mapper.to_domain_event(x) for x in notifications]
    assert sum(sizes) == len(events), (sum(sizes), len(events))
    groups, at = [], 0
    for size in sizes:  # the same transactions, slice by slice
        groups.append(events[at : at + size])
        at += size
    with Engine(bare_url, start=False) as bare:
        bare_seconds, _ = timed(lambda: [bare.app.save(*g) for g in groups])
    applied = sum(r.status == "applied" for r in results)
    return {
        "commands": len(commands),
        "applied": applied,
        "events": len(events),
        "transactions": len(sizes),
        "apply_commands_per_s": round(len(commands) / seconds),
        "apply_events_per_s": round(len(events) / seconds),
        "bare_append_events_per_s": round(len(events) / bare_seconds),
        "ratio": round(bare_seconds / seconds, 2),
    }


def fan_out_and_rebuild(n: int, folder: Path, rebuild_too: bool = True) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'fanout.db'}"
    with Engine(url, start=False) as engine:
        fill_store(engine.app, iter([region_opened("CN", START)]))
        fill_seconds, _ = timed(lambda: fill_store(engine.app, registration_events(n)))
        catch_up_seconds, _ = timed(engine.projector.start)
        rule = {
            "command": "apply_region_rule",
            "region": "CN",
            "rule": "free_hosting_suspended",
            "effective_at": RULE_AT.isoformat(),
        }
        fan_out_seconds, (result,) = timed(lambda: engine.apply([rule]))
        assert result.status == "applied", result.reason
        revoked = sum(1 for a in account_ids(min(n, 100)) if not engine.check(a, "host").allowed)
        assert revoked == min(n, 100)
        total = engine.position()
        fan_out = {
            "accounts": n,
            "seconds": round(fan_out_seconds, 2),
            "events_per_s": round(n / fan_out_seconds),
            "setup_fill_seconds": round(fill_seconds, 1),
            "engine_start_catch_up_seconds": round(catch_up_seconds, 1),
        }
        if not rebuild_too:
            return {"fan_out": fan_out}

        def raw_read() -> int:
            count, position = 0, 0
            while True:
                page = engine.app.recorder.select_notifications(start=position + 1, limit=1000)
                for x in page:
                    engine.app.mapper.to_domain_event(x)
                count += len(page)
                if len(page) < 1000:
                    return count
                position = page[-1].id

        raw_seconds, _ = timed(raw_read)
        rebuild_seconds, _ = timed(lambda: rebuild(engine.app, url))
    return {
        "fan_out": fan_out,
        "rebuild": {
            "events": total,
            "seconds": round(rebuild_seconds, 2),
            "events_per_s": round(total / rebuild_seconds),
            "raw_read_decode_events_per_s": round(total / raw_seconds),
            "ratio": round(raw_seconds / rebuild_seconds, 2),
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--apply-accounts", type=int, default=None, help="default: accounts / 10")
    parser.add_argument("--only", choices=("memory", "apply", "fanout"), action="append")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-rebuild", action="store_true", help="fan-out only, no rebuild")
    args = parser.parse_args(argv)
    only = set(args.only or ("memory", "apply", "fanout"))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "memory" in only:
            figures["memory"] = memory(args.accounts)
        if "apply" in only:
            figures["apply"] = apply_vs_bare(
                args.apply_accounts or max(args.accounts // 10, 10), Path(tmp)
            )
        if "fanout" in only:
            figures.update(fan_out_and_rebuild(args.accounts, Path(tmp), not args.no_rebuild))
    return emit(figures, args.json)


def emit(figures: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """Print the figures as JSON, and keep them in `path` too when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if path:
        path.write_text(text)
    return figures


if __name__ == "__main__":
    main()
