"""A checking worker's figures on a store built by real commands, next to a floor of the
same run.

    python -m benchmarks.worker_figures --accounts 300000 --json worker.json

The synthetic fills (benchmarks/synthetic.py) write one bare AccountRegistered per account:
no command ids, no actors, no rule-caused events triggered by the account's own commands.
A store built by `apply` has all of them, and a worker's index holds what they leave per
account. So this script writes a command file of about 4N/3 + 1 lines for N accounts, a
day of a real service (sign-ups over five regions, plans and channels; subscriptions
opened and closed, some from next month; hosting revoked and restored, accounts suspended
and reinstated, moves to partners, suspended sign-ups approved; partners authorized and
region rules applied, two of them fanning out; command ids given or derived, actors from
the user, an agent of a pool, or none), applies it through `Engine.apply_parsed` (what
`entitlements apply` runs), and keeps the store in a temporary folder named by N and the
file's version (built once: about 2 minutes at 300,000 accounts). Each run then writes the
index snapshot with the code under test (opening from its own snapshot if it can read it,
else from the log) and measures, in fresh interpreters:

- a checking process: `open_engine` to its first answer (open time), resident bytes per
  account (RSS growth from before `open_engine`) after the open and after checking two
  capabilities ("host", "join", now) of every account;
- the floor: the RSS growth of a dict of the same N account ids, fresh strings, nothing else.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.index_figures import rss, run_child
from benchmarks.synthetic import account_ids

VERSION = 1  # of the command file: a store built by another version is built again
DAY = datetime(2026, 12, 1, tzinfo=UTC)  # when the commands are recorded (a past day)
NEXT_MONTH = "2027-01-01"  # some subscriptions and one rule take effect then
REGIONS = ("CN", "CN", "US", "US", "US", "HK", "DE", "JP")
PARTNERS = {
    "CN": ("Bizconf Communications", "Suirui Zhumu Video Conference", "Systec Umeet"),
    "DE": ("Telekom Partner",),
    "HK": ("HK Reseller",),
}
REASONS = (
    "abuse report",
    "spam reports",
    "payment failed",
    "chargeback",
    "terms of service violation",
    "security review",
    "audit finding",
    "appeal accepted",
    "resolved by support",
    "not renewed",
    "downgrade requested",
    "government request",
)
AGENTS = 300  # support agents, each acting for many accounts
CAPABILITIES = ("host", "join")


class _Day:
    """The command file, line by line: each account's state as the commands leave it, so
    that most commands are applied (a few are rejected, as on a real day)."""

    def __init__(self, n: int, seed: int = 16) -> None:
        self.n = n
        self.rng = random.Random(seed)
        self.ids = account_ids(n)
        self.total = n + n // 3 + 1  # lines
        self.step = timedelta(seconds=86_400 / self.total)
        self.line = 0
        self.state: list[dict[str, Any]] = []  # per registered account
        self.rules: set[tuple[str, str]] = set()

    def now(self) -> datetime:
        """When the next line is recorded."""
        return DAY + self.step * self.line

    def stamp(self, command: dict[str, Any], effective: str | None = None) -> dict[str, Any]:
        """Recorded now (a line later than the last), effective now unless told; who asked."""
        at = _iso(self.now())
        self.line += 1
        command |= {"recorded_at": at, "effective_at": effective or at}
        draw = self.rng.random()
        if draw < 0.6:
            command["command_id"] = f"crm-{self.line:08d}-{self.rng.getrandbits(24):06x}"
        account = command.get("account_id")
        if account is not None and draw < 0.45:
            command["actor"] = f"user:{account}"
        elif draw < 0.8:
            command["actor"] = f"agent-{self.rng.randrange(AGENTS):03d}@support.example"
        return command

    def region_commands(self, phase: int) -> Iterator[dict[str, Any]]:
        """What the regions do at the start, a third and two thirds of the day."""
        if phase == 0:
            for region, partners in PARTNERS.items():
                for p in partners:
                    yield {"command": "authorize_partner", "region": region, "partner": p}
            yield {
                "command": "apply_region_rule",
                "region": "CN",
                "rule": "online_subscriptions_closed",
            }
            yield {"command": "apply_region_rule", "region": "CN", "rule": "direct_sales_closed"}
        elif phase == 1:  # fans out over CN's free accounts; HK's takes effect next month
            yield {"command": "apply_region_rule", "region": "CN", "rule": "free_hosting_suspended"}
            yield {
                "command": "apply_region_rule",
                "region": "HK",
                "rule": "free_hosting_suspended",
                "effective_at": NEXT_MONTH,
            }
        else:
            yield {"command": "apply_region_rule", "region": "CN", "rule": "registration_suspended"}

    def registration(self, i: int) -> dict[str, Any]:
        rng = self.rng
        region = rng.choice(REGIONS)
        plan = rng.choices(("free", "pro", "business", "enterprise"), (50, 25, 15, 10))[0]
        partner = None
        if plan in ("free", "pro"):
            channel = "online"
            if region == "CN" and plan == "pro":
                plan = "free"  # online subscriptions are closed in CN
        elif region in PARTNERS and (region == "CN" or rng.random() < 0.3):
            channel, partner = "partner", rng.choice(PARTNERS[region])
        else:
            channel = "direct"
        suspended = ("CN", "registration_suspended") in self.rules and not (
            plan == "enterprise" and channel != "online"
        )
        since = self.now()
        command = {
            "command": "register_account",
            "account_id": self.ids[i],
            "region": region,
            "plan": plan,
            "channel": channel,
        } | ({"partner": partner} if partner else {})
        if channel != "partner" and rng.random() < 0.25:  # imported: in force for years
            since -= timedelta(days=rng.randrange(1, 2000), seconds=rng.randrange(86_400))
            command["effective_at"] = _iso(since)
        self.state.append(
            {
                "region": region,
                "plan": plan,
                "revoked": False,
                "suspended": False,
                "pending": suspended,
                "since": since,
            }
        )
        return command

    def follow_up(self) -> dict[str, Any]:
        """A command on an account registered earlier: what its state allows, mostly."""
        rng = self.rng
        i = rng.randrange(len(self.state))
        s, account = self.state[i], self.ids[i]
        base: dict[str, Any] = {"account_id": account}
        region = s["region"]
        if s["pending"]:
            s["pending"], s["plan"] = False, "enterprise"
            return base | {
                "command": "approve_registration",
                "channel": "partner",
                "partner": rng.choice(PARTNERS["CN"]),
            }
        if s["suspended"]:
            s["suspended"] = False
            return base | {"command": "reinstate_account", "reason": rng.choice(REASONS)}
        if s["revoked"] and rng.random() < 0.5:
            s["revoked"] = False
            return base | {"command": "restore_hosting", "reason": "resolved by support"}
        draw = rng.random()
        if draw < 0.35 and s["plan"] == "free":
            s["plan"] = "pro" if region != "CN" else "business"
            if region == "CN":
                return base | {
                    "command": "open_subscription",
                    "plan": "business",
                    "channel": "partner",
                    "partner": rng.choice(PARTNERS["CN"]),
                }
            later = rng.random() < 0.15  # from next month: a future change point
            return (
                base
                | {"command": "open_subscription", "plan": "pro", "channel": "online"}
                | ({"effective_at": NEXT_MONTH} if later else {})
            )
        if draw < 0.45 and s["plan"] != "free":
            s["plan"] = "free"
            return base | {"command": "close_subscription", "reason": rng.choice(REASONS[9:11])}
        if draw < 0.6 and region in PARTNERS and s["plan"] != "free":
            return base | {"command": "move_to_partner", "partner": rng.choice(PARTNERS[region])}
        if draw < 0.8 and not s["revoked"]:
            s["revoked"] = True
            back = rng.random() < 0.3  # backdated: found in an audit
            when = _iso(s["since"] + (self.now() - s["since"]) * rng.random()) if back else None
            return (
                base
                | {"command": "revoke_hosting", "reason": rng.choice(REASONS[:7])}
                | ({"effective_at": when} if when else {})
            )
        s["suspended"] = True
        jurisdiction = "platform" if rng.random() < 0.8 else region
        return base | {
            "command": "suspend_account",
            "jurisdiction": jurisdiction,
            "reason": rng.choice(REASONS[:7] + REASONS[11:]),
        }

    def lines(self) -> Iterator[dict[str, Any]]:
        phases = {0: 0, self.total // 3: 1, 2 * self.total // 3: 2}
        pending = sum(len(list(self.region_commands(p))) for p in phases.values())
        registered = 0
        while self.line < self.total:
            phase = phases.pop(self.line, None) if phases else None
            if phase is not None:
                for command in self.region_commands(phase):
                    effective = command.pop("effective_at", None)
                    if command["command"] == "apply_region_rule":
                        self.rules.add((command["region"], command["rule"]))
                    pending -= 1
                    yield self.stamp(command, effective)
                continue
            left = self.total - self.line - pending
            if registered < self.n and (
                not self.state or self.rng.random() < (self.n - registered) / left
            ):
                command = self.registration(registered)
                registered += 1
            else:
                command = self.follow_up()
            yield self.stamp(command, command.pop("effective_at", None))


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def write_commands(n: int, path: Path) -> int:
    """The command file of a day with n sign-ups; returns its number of lines."""
    count = 0
    with path.open("w") as f:
        for command in _Day(n).lines():
            f.write(json.dumps(command) + "\n")
            count += 1
    return count


def store_folder(n: int) -> Path:
    """Where the applied store of n accounts is kept between runs (never in the repo)."""
    return Path(tempfile.gettempdir()) / f"entitlements-applied-{n}-v{VERSION}"


def applied_store(n: int, folder: Path | None = None) -> tuple[str, dict[str, Any]]:
    """The store built by applying the day's command file (built once, then reused)."""
    from entitlements.application.engine import Engine
    from entitlements.domain.commands import parse_command_file

    folder = folder or store_folder(n)
    built = folder / "built.json"
    url = f"sqlite:///{folder / 'store.db'}"
    if built.exists():
        return url, json.loads(built.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    commands = folder / "commands.jsonl"
    t = time.perf_counter()
    lines = write_commands(n, commands)
    parsed = parse_command_file(commands)
    with Engine(url) as engine:
        statuses = Counter(r.status for r in engine.apply_iter(parsed))
        position = engine.position()
    setup = {
        "command_lines": lines,
        "applied": statuses["applied"],
        "rejected": statuses["rejected"],
        "log_position": position,
        "build_seconds": round(time.perf_counter() - t, 1),
    }
    built.write_text(json.dumps(setup))
    return url, setup


def write_snapshot(url: str) -> dict[str, Any]:
    """The index snapshot written by the code under test (from its own snapshot when it
    reads it, else from the log), as a process leaves it."""
    from entitlements.application.engine import Engine

    t = time.perf_counter()
    with Engine(url) as engine:
        opened = time.perf_counter() - t
        from_snapshot = engine.projector._snapshot_position > 0
        t = time.perf_counter()
        engine.projector.save_snapshot()
        saved = time.perf_counter() - t
        path = engine.projector.snapshot_file
    assert path is not None
    return {
        "setup_opened_from": "snapshot" if from_snapshot else "log",
        "setup_open_seconds": round(opened, 2),
        "setup_save_snapshot_seconds": round(saved, 2),
        "snapshot_bytes": path.stat().st_size,
    }


def child(url: str, n: int, traced: bool) -> dict[str, Any]:
    """Run in a fresh process: open, then check two capabilities of every account."""
    import tracemalloc

    from entitlements import open_engine

    ids = account_ids(n)  # made before measuring: the ids are the caller's, not the index's
    gc.collect()
    if traced:
        tracemalloc.start()
    before = rss()
    t = time.perf_counter()
    engine = open_engine(url)
    opened = time.perf_counter() - t
    engine.check(ids[0], "host")
    first = time.perf_counter() - t
    from_snapshot = engine.projector._snapshot_position > 0
    gc.collect()
    after_open = rss()
    traced_open = tracemalloc.get_traced_memory()[0] if traced else 0
    t = time.perf_counter()
    for a in ids:
        for capability in CAPABILITIES:
            engine.check(a, capability)
    checks = time.perf_counter() - t
    gc.collect()
    after_checks = rss()
    traced_checks = tracemalloc.get_traced_memory()[0] if traced else 0
    engine.close()
    return {
        "accounts": n,
        "from_snapshot": from_snapshot,
        "open_seconds": round(opened, 3),
        "open_to_first_answer_seconds": round(first, 3),
        "resident_after_open_bytes_per_account": round((after_open - before) / n),
        "resident_after_checks_bytes_per_account": round((after_checks - before) / n),
        "check_every_account_twice_seconds": round(checks, 2),
        **(
            {
                "traced_after_open_bytes_per_account": round(traced_open / n),
                "traced_after_checks_bytes_per_account": round(traced_checks / n),
            }
            if traced
            else {}
        ),
    }


def floor(n: int) -> dict[str, Any]:
    """Run in a fresh process: the RSS growth of a dict of the n account ids alone."""
    from benchmarks.index_figures import floor as dict_of_ids

    grown = dict_of_ids(n)["resident_floor_dict_of_ids_bytes_per_account"]
    return {"floor_dict_of_ids_bytes_per_account": grown}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=300_000)
    parser.add_argument("--store", type=Path, help="the folder of the applied store")
    parser.add_argument("--traced", action="store_true", help="also tracemalloc (slower)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the store URL, or "floor"
    args = parser.parse_args(argv)
    if args.child:
        figures = (
            floor(args.accounts)
            if args.child == "floor"
            else child(args.child, args.accounts, args.traced)
        )
        print(json.dumps(figures))
        return figures
    url, setup = applied_store(args.accounts, args.store)
    setup |= write_snapshot(url)
    command = [sys.executable, "-m", "benchmarks.worker_figures", "--child", url]
    command += ["--accounts", str(args.accounts)] + (["--traced"] if args.traced else [])
    worker = run_child(command)
    command[command.index(url)] = "floor"
    worker |= run_child(command)
    worker["after_checks_over_floor"] = round(
        worker["resident_after_checks_bytes_per_account"]
        / max(worker["floor_dict_of_ids_bytes_per_account"], 1),
        2,
    )
    figures = {"worker": worker, "setup": setup}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return figures


if __name__ == "__main__":
    main()
