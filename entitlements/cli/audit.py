"""`entitlements audit`: the auditors' proofs from the log (jurisdiction, residency, export,
verify)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from entitlements.application import audit
from entitlements.application.engine import Engine
from entitlements.cli.exits import EXIT_OK, EXIT_VIOLATION
from entitlements.cli.output import asked_by, err, out
from entitlements.cli.parsers import Subparsers, command_group, json_option, region_argument
from entitlements.domain.rules import ISOLATION_RULE


def cmd_audit_jurisdiction(engine: Engine, args: argparse.Namespace) -> int:
    """Exit 0 when no command under REGION's jurisdiction changed an account outside it, 6
    when the log shows one did (each violation printed)."""
    report = audit.jurisdiction(engine, args.region)
    return _proof(report, args.json, "Jurisdiction", _jurisdiction_tables, _print_verdict)


def _proof(
    report: dict[str, Any],
    as_json: bool,
    title: str,
    tables: Callable[[dict[str, Any]], Iterable[Table]],
    verdict: Callable[[dict[str, Any]], None],
) -> int:
    """An audit's proof printed (JSON, or a heading, its tables and its verdict); exit 0
    when the promise holds, 6 when the log shows it broken."""
    code = EXIT_OK if report["holds"] else EXIT_VIOLATION
    if as_json:
        print(json.dumps(report))
        return code
    head = report["head"]["position"]
    out.print(escape(f"{title} {report['region']}, from the log up to position {head}:"))
    for table in tables(report):
        out.print(table)
    verdict(report)
    return code


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A table whose title and cells are data from the log, so escaped for rich."""
    table = Table(title=escape(title), title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(escape(x) for x in row))
    return table


def _accounts(c: dict[str, Any]) -> str:
    return ", ".join(f"{a['account_id']} ({a['region']})" for a in c["accounts"])


def _jurisdiction_tables(report: dict[str, Any]) -> list[Table]:
    """The applied commands, the region's rules and the rejected attempts, one table each."""
    r = report["region"]
    applied = _table(
        f"commands under {r}'s jurisdiction (applied)",
        ("position", "command", "asked by", "effective_at", "accounts changed", "proof"),
        (
            (str(c["position"]), c["command"], asked_by(c), c["effective_at"], _accounts(c))
            + (c["proof"],)
            for c in report["commands"]
        ),
    )
    rules = _table(
        f"{r}'s region rules and the accounts they reached",
        ("position", "command", "effective_at", "accounts changed"),
        (
            (str(c["position"]), c["command"], c["effective_at"], _accounts(c) or "-")
            for c in report["rule_commands"]
        ),
    )
    rejected = _table(
        f"rejected attempts under {r}'s jurisdiction",
        ("position", "command", "account", "asked by", "effective_at", "reason"),
        (
            (str(c["position"]), c["command"], f"{c['account_id']} ({c['account_region']})")
            + (asked_by(c), c["effective_at"], c["reason"])
            for c in report["rejected"]
        ),
    )
    return [applied, rules, rejected]


def _print_verdict(report: dict[str, Any]) -> None:
    """Ids no command record explains, then whether the promise holds (or each violation)."""
    r = report["region"]
    if report["unattributed_command_ids"]:
        out.print(
            escape(
                "account events name command ids with no command record: "
                + ", ".join(report["unattributed_command_ids"])
            )
        )
    if report["holds"]:
        out.print(
            "[green]holds:[/] "
            + escape(f"no command under {r}'s jurisdiction changed an account outside {r}.")
        )
        return
    for v in report["violations"]:
        out.print(
            "[red]VIOLATION[/] "
            + escape(
                f"at position {v['position']}: {v['violation']}"
                + (f" (command {v['command_id']})" if v.get("command_id") else "")
            )
        )


def cmd_audit_residency(engine: Engine, args: argparse.Namespace) -> int:
    """Exit 0 when no account outside REGION could be routed via REGION while its data
    centres were isolated (as known now, and as known then); 6 with each violation."""
    report = audit.residency(engine, args.region)
    return _proof(report, args.json, "Residency of", _residency_tables, _residency_verdict)


def _residency_verdict(report: dict[str, Any]) -> None:
    """The exposure before the isolation took effect, then whether the promise holds."""
    r = report["region"]
    exposure = report["exposure"]
    if exposure["until"] is not None:
        out.print(
            escape(
                f"before the isolation took effect ({exposure['until']}): "
                f"{exposure['accounts']} accounts outside {r} could be routed via {r}"
                + (f", from {exposure['since']}" if exposure["since"] else "")
            )
        )
    if report["holds"]:
        out.print(
            "[green]holds:[/] "
            + escape(
                f"no account outside {r} could be routed via {r} while its data centres "
                "were isolated, as known now or as known then."
                if report["isolation"]
                else f"{r}'s data centres were never isolated: nothing was promised."
            )
        )
    for v in report["violations"]:
        out.print("[red]VIOLATION[/] " + escape(v["violation"]), soft_wrap=True)


def _spans(intervals: list[dict[str, Any]]) -> str:
    return ", ".join(f"{i['since']} to {i['until'] or 'now'}" for i in intervals) or "-"


def _residency_tables(report: dict[str, Any]) -> list[Table]:
    """The isolation's switches with their clocks, and the accounts that could be routed."""
    r = report["region"]
    switches = _table(
        f"{ISOLATION_RULE} in {r}: its clocks",
        ("switch", "effective_at", "recorded_at", "clocks", "asked by"),
        (
            (f"{c['type']} v{c['version']}", c["effective_at"], c["recorded_at"], c["clocks"])
            + (asked_by(c),)
            for c in report["isolation"]
        ),
    )
    accounts = _table(
        f"accounts outside {r} that could be routed via {r} (effective time)",
        ("account", "region", "as known now", "as known then"),
        (
            (a["account_id"], a["region"], _spans(a["as_known_now"]), _spans(a["as_known_then"]))
            for a in report["accounts"]
        ),
    )
    return [switches, accounts]


def cmd_audit_export(engine: Engine, args: argparse.Namespace) -> int:
    """A case file, as JSON or CSV, to a file or stdout."""
    if (args.account is None) == (args.region is None):
        raise ValueError("scope: give ACCOUNT or --region R (one of them)")
    case = audit.export_case(engine, args.account, args.region, args.from_, args.to)
    text = json.dumps(case, indent=1) + "\n" if args.format == "json" else audit.case_csv(case)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        err.print(
            escape(
                f"case file written to {args.output}: {len(case['events'])} events, "
                f"{len(case['rejections'])} rejections, {len(case['decisions'])} decisions, "
                f"head position {case['head']['position']}"
            ),
            soft_wrap=True,  # one line whatever the terminal's width: scripts grep it
        )
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_audit_verify(engine: Engine, args: argparse.Namespace) -> int:
    """Exit 0 when the integrity chain holds over the whole log (and the receipt, if given);
    6 with the first break (position, kind, one line) or a receipt that does not hold."""
    report = audit.verify(engine, args.receipt)
    code = EXIT_OK if report["ok"] else EXIT_VIOLATION
    if args.json:
        print(json.dumps(report))
        return code
    head = report["head"]
    broken = report.get("break")
    receipt = report.get("receipt")
    if broken is not None:
        out.print(
            "[red]BROKEN[/] "
            + escape(f"at position {broken['position']}: {broken['kind']}: {broken['reason']}"),
            soft_wrap=True,
        )
        return code
    if receipt is not None and not receipt["holds"]:
        out.print(
            "[red]RECEIPT FAILS[/] "
            + escape(f"at position {receipt['position']}: {receipt['reason']}"),
            soft_wrap=True,
        )
        return code
    if head["hash"] is None:
        out.print(
            escape(
                f"no record is chained yet: {report['legacy']} records, up to "
                f"position {head['position']}, are from before the chain"
            )
        )
    else:
        legacy = report["legacy"]
        before = f"; {legacy} earlier records from before the chain" if legacy else ""
        out.print(
            "[green]intact:[/] "
            + escape(
                f"{report['chained']} records chained from position "
                f"{report['chain_starts_at']}{before}"
            )
        )
        out.print(escape(f"head {head['hash']}@{head['position']}"))
    if receipt is not None:
        out.print(
            "[green]receipt holds:[/] "
            + escape(f"the log up to position {receipt['position']} is unchanged since it")
        )
    return code


def add_parser(sub: Subparsers) -> None:
    """`audit` and its actions."""
    audit_sub = command_group(
        sub,
        "audit",
        help="auditors' proofs from the log: jurisdiction, residency, export, verify",
        description="Read-only questions answered from the log itself.",
    )
    _add_jurisdiction(audit_sub)
    _add_residency(audit_sub)
    _add_export(audit_sub)
    _add_verify(audit_sub)


def _add_jurisdiction(audit_sub: Subparsers) -> None:
    """`audit jurisdiction REGION`."""
    _add_region_proof(
        audit_sub,
        "jurisdiction",
        cmd_audit_jurisdiction,
        help="show that no command under REGION's jurisdiction changed an account outside it",
        description="Walks the command records (applied and rejected) and the account "
        "events, and lists: the applied commands under REGION's jurisdiction with the "
        "accounts they changed and their regions (all must be REGION), REGION's own rule "
        "commands with the accounts they reached, and every rejected attempt under REGION's "
        "jurisdiction with its reason. An applied command's record keeps its jurisdiction; "
        "for records older than that field, it is proved from the command's SHA-256 "
        "fingerprint (see README, For auditors). "
        "Exit 0 when the promise holds, 6 when a violation is found (printed).",
    )


def _add_residency(audit_sub: Subparsers) -> None:
    """`audit residency REGION`."""
    _add_region_proof(
        audit_sub,
        "residency",
        cmd_audit_residency,
        help="show that no meeting from outside REGION was routed via REGION once isolated",
        description="Walks the log and decides route_via:REGION with the domain's rules for "
        "every account outside REGION, at every time where the answer can change. Lists "
        "the data_centre_isolated switches of REGION with both clocks (ahead of time or "
        "backdated, who asked), and each account that could be routed via REGION with the "
        "effective-time intervals: as known now, and as known then (at each instant, what "
        "was recorded by it: what a meeting service was told). Exit 0 when no such interval "
        "reaches into a period in which the isolation was in force, 6 when one does "
        "(printed: a backdated isolation shows as one).",
    )


def _add_region_proof(
    audit_sub: Subparsers,
    name: str,
    run: Callable[[Engine, argparse.Namespace], int],
    help: str,
    description: str,
) -> None:
    """An audit that proves a promise about REGION from the log (exit 0 it holds, 6 not):
    REGION, `--json`, and the examples its help shows."""
    a = audit_sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"example:\n  entitlements audit {name} CN\n"
        f"  entitlements audit {name} CN --json | jq .violations",
        run=run,
    )
    region_argument(a)
    json_option(a)


def _add_export(audit_sub: Subparsers) -> None:
    """`audit export`."""
    a = audit_sub.add_parser(
        "export",
        help="a case file of one account or region: events, rejections, decisions, head",
        description="Writes a case file: the events (both clocks, actor, command_id, cause, "
        "log position) taking effect in [--from, --to], the rejections, the decision of "
        "every capability at --from and at each change point (an effective time where an "
        "event takes effect) in the window, and the log's head position (`head.hash` is "
        "kept for the integrity chain). CSV is one flat file whose `kind` column says what "
        "a row is: head, event, rejection or decision.",
        epilog="examples:\n  entitlements audit export cn-free-01 --format json\n"
        "  entitlements audit export --region CN --from 2020-05-01 --to 2020-09-01 "
        "--format csv --output cn-2020.csv",
        run=cmd_audit_export,
    )
    a.add_argument("account", nargs="?", metavar="ACCOUNT", help="the account (or --region)")
    a.add_argument("--region", metavar="R", help="every account of region R, and its rules")
    a.add_argument("--from", dest="from_", metavar="T", help="window start (effective time)")
    a.add_argument("--to", metavar="T", help="window end (effective time, inclusive)")
    a.add_argument("--format", required=True, choices=("json", "csv"), help="json or csv")
    a.add_argument("--output", metavar="FILE", help="write here instead of stdout")


def _add_verify(audit_sub: Subparsers) -> None:
    """`audit verify`: the log alone, no index."""
    a = audit_sub.add_parser(
        "verify",
        help="recompute the log's integrity chain: the head hash, or where it breaks",
        description="Walks the whole log recomputing the SHA-256 chain that links every "
        "record (events and command records) to the one before it. Prints the head's "
        "hash and position (write it down: it is a receipt), or the first position where "
        "the chain breaks and how (edited, deleted, inserted or reordered). With --receipt "
        "HASH@POSITION, also proves the log up to POSITION is unchanged since the receipt "
        "was written (this catches a chain recomputed after an edit). Exit 0 when all "
        "holds, 6 otherwise.",
        epilog="examples (the receipt is the demo store's head):\n  entitlements audit verify\n"
        "  entitlements audit verify --json --receipt \\\n"
        "    108835fac523e7ed9cee4750eb5a7ceb8a5e3403281f547b0bcfdcfb4827ae9a@56",
        run=cmd_audit_verify,
        lazy_index=True,
    )
    a.add_argument("--receipt", metavar="HASH@POSITION", help="a head written down earlier")
    json_option(a)
