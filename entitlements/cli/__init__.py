"""The `entitlements` command line: apply command files, check, audit, rebuild, demo.

Exit codes: 0 ok; 1 a command was rejected by a domain rule; 2 malformed input (nothing
applied); 3 unknown account; 4 the store failed (or holds a damaged record); 5
--min-position not reached in time; 6 an audit found a violation; 141 stdout's reader went
away, any command (`| head`; what `apply` printed was applied).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from eventsourcing.persistence import PersistenceError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from entitlements import audit, report
from entitlements.commands import (
    Command,
    MalformedCommand,
    check_command_file,
    parse_command_file,
    parse_time,
    stream_command_file,
)
from entitlements.damaged import DamagedRecord
from entitlements.decisions import Decision, PositionNotReached, UnknownAccount
from entitlements.engine import Engine, open_engine
from entitlements.http.settings import HEADER_TIMEOUT, MAX_STALENESS
from entitlements.rules import CAPABILITIES, LIMIT_CAPABILITIES
from entitlements.store import (
    DEFAULT_URL,
    ENV_VAR,
    StoreError,
    StoreUnavailable,
    check_store,
    sqlite_path,
    store_url,
)
from entitlements.tokens import ROLES, TokenStore
from projections.rebuild import Resumed, SqlProjection, rebuild

EXIT_OK, EXIT_REJECTED, EXIT_MALFORMED, EXIT_UNKNOWN_ACCOUNT, EXIT_STORE, EXIT_NOT_REACHED = (
    0,
    1,
    2,
    3,
    4,
    5,
)
EXIT_VIOLATION = 6  # an audit found the log breaking a promise
EXIT_BROKEN_PIPE = 141  # as a shell reports a process its reader left (128 + SIGPIPE)


class _Out(Console):
    """stdout's console: a reader gone away raises BrokenPipeError for main() to end with
    141, as for every command (rich's default exits 1, silently)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "stdout's reader went away")


# Data is printed through escape() (or as plain JSON): an account, partner or reason may
# contain "[/]" or ":smile:", which rich would otherwise read as markup or emoji codes.
out = _Out(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, emoji=False)

DESCRIPTION = """\
What may this account do at time T, as we knew it at time K?

Every answer is derived from an append-only log of account and region events, each
with two clocks: effective_at (when it takes effect) and recorded_at (when we learned it).

  entitlements demo                               the 2020 China story, end to end
  entitlements apply commands.jsonl               record a command file
  entitlements check cn-free-01 host --at 2020-05-19
  entitlements check cn-ent-02 host --at 2020-10-01 --as-known-at 2020-10-20 --json
  entitlements capabilities cn-pro-01 --at 2020-08-11
  entitlements history cn-free-02
  entitlements explain cn-free-01 host --at 2020-05-19     why, since when, and the rule behind it
  entitlements audit jurisdiction CN                       CN's requests never left CN (exit 6 if one did)
  entitlements audit export cn-free-01 --format csv        a case file
  entitlements rebuild                            SQL read models + index snapshot, from the log
  entitlements report CN --from 2020-01-01 --to 2020-12-31 --png cn.png    daily counts per plan

Times are ISO 8601; a bare date is 00:00 UTC, a time without offset is UTC.
"""


def scenario_path(name: str = "china-2020") -> Path:
    """The project's own copy of a shared scenario command file."""
    return Path(str(resources.files("entitlements") / "scenarios" / f"{name}.jsonl"))


# -- apply -------------------------------------------------------------------------------


PROGRESS_FROM = 200  # lines: a longer file shows a progress bar on stderr (a terminal)


class FileChanged(ValueError):
    """The command file changed between `apply`'s two passes (validate, then apply)."""


def _second_pass(path: str, total: int) -> Iterator[tuple[int, Command]]:
    """The file read again, as it is applied: a line that no longer validates, or more or
    fewer lines than the first pass counted, means it changed in between (the results
    printed before the error were applied)."""
    count = 0
    try:
        for numbered in stream_command_file(path):
            count += 1
            if count > total:
                raise FileChanged(f"{path} grew after it was validated: line {numbered[0]}")
            yield numbered
    except MalformedCommand as e:
        raise FileChanged(f"{path} changed after it was validated: {e}") from None
    if count < total:
        raise FileChanged(f"{path} shrank after it was validated: {count} of {total} commands")


def cmd_apply(_: Engine | None, args: argparse.Namespace) -> int:
    """Two passes over the file, one line at a time, so memory does not grow with its
    length: the first validates every line (a bad one refuses the file before a store is
    opened or created); the second applies them, each line's result printed (and flushed)
    as soon as it is committed: every line printed was applied, and running the file again
    reports the rest (earlier lines as duplicates, by their command_id)."""
    store_url(args.db)  # a URL the engine cannot use says so first, creating nothing
    total = check_command_file(args.file)
    if total == 0:
        return EXIT_OK  # nothing to apply: no store is created for it
    show_bar = err.is_terminal and total >= PROGRESS_FROM
    bar = Progress(
        TextColumn("[bold]apply[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not show_bar,
        redirect_stdout=False,  # the results are stdout's, whatever stderr is (`> file`)
        redirect_stderr=False,
    )
    any_rejected = False
    with Engine(args.db) as engine, bar:
        task = bar.add_task("apply", total=total)
        for r in engine.apply_iter(_second_pass(args.file, total)):
            try:
                print(json.dumps(r.as_dict()), flush=True)
            except BrokenPipeError:  # the reader went away (`apply FILE | head -1`): stop here
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return EXIT_BROKEN_PIPE
            any_rejected |= r.status == "rejected"
            bar.advance(task)
    return EXIT_REJECTED if any_rejected else EXIT_OK


# -- check and capabilities --------------------------------------------------------------


def _yes_no(d: Decision) -> str:
    if d.capability in LIMIT_CAPABILITIES:
        return f"[green]{d.value}[/]" if d.allowed else "[red]0[/]"
    return "[green]yes[/]" if d.allowed else "[red]no[/]"


def _when(args: argparse.Namespace) -> str:
    """The asked times, escaped for rich."""
    at = f"at {args.at}" if args.at else "now"
    return escape(at + (f", as known at {args.as_known_at}" if args.as_known_at else ""))


def _print_because(d: Decision) -> None:
    for f in d.because:
        rule = f"{f.cause['rule']} ({f.cause['region']})" if f.cause else ""
        cause = f" [dim]cause: {escape(rule)}[/]" if f.cause else ""
        out.print(
            escape(
                f"  because {f['type']} v{f['version']} of {f['stream']}: effective "
                f"{f['effective_at']}, recorded {f['recorded_at']}"
            )
            + cause
        )


def cmd_check(engine: Engine, args: argparse.Namespace) -> int:
    d = engine.check(args.account, args.capability, args.at, args.as_known_at, args.min_position)
    if args.json:
        print(json.dumps({**d.as_dict(), "at": args.at, "as_known_at": args.as_known_at}))
        return EXIT_OK
    out.print(
        f"{escape(d.account_id)} {escape(d.capability)} {_when(args)}: {_yes_no(d)} — {escape(d.reason)}"
    )
    _print_because(d)
    out.print(f"  [dim]log position {d.position}[/]")
    return EXIT_OK


def cmd_capabilities(engine: Engine, args: argparse.Namespace) -> int:
    decisions = engine.capabilities(args.account, args.at, args.as_known_at, args.min_position)
    if args.json:
        print(
            json.dumps(
                {
                    "account_id": args.account,
                    "at": args.at,
                    "as_known_at": args.as_known_at,
                    "capabilities": [d.as_dict() for d in decisions],
                }
            )
        )
        return EXIT_OK
    table = Table(title=f"{escape(args.account)} {_when(args)}", title_justify="left")
    for col in ("capability", "answer", "reason", "because"):
        table.add_column(col)
    for d in decisions:
        because = ", ".join(f"{f['type']} v{f['version']}" for f in d.because)
        table.add_row(escape(d.capability), _yes_no(d), escape(d.reason), escape(because))
    out.print(table)
    return EXIT_OK


# -- history -----------------------------------------------------------------------------


def _given_id(command_id: str | None) -> str | None:
    """A command_id someone gave, to show people; derived ones (auto:, api:) say nothing
    a person can use, and stay in the JSON."""
    if command_id is None or command_id.startswith(("auto:", "api:")):
        return None
    return f"({command_id})"


def cmd_history(engine: Engine, args: argparse.Namespace) -> int:
    if args.as_known_at is not None or args.rejections:
        return _history_as_known(engine, args)
    events = engine.history(args.account)
    if args.json:
        print(json.dumps(events))
        return EXIT_OK
    table = Table(title=f"history of {escape(args.account)} (log order)", title_justify="left")
    for col in ("v", "event", "effective_at", "recorded_at", "details", "cause", "asked by"):
        table.add_column(col)
    core = {
        "stream",
        "type",
        "version",
        "effective_at",
        "recorded_at",
        "cause",
        "actor",
        "command_id",
    }
    for e in events:
        details = ", ".join(f"{k}={v}" for k, v in e.items() if k not in core)
        asked_by = " ".join(x for x in (e.get("actor"), _given_id(e.get("command_id"))) if x)
        cause = e["cause"]
        why = ""
        if cause:
            ref = cause.get("rule_event") or {}
            why = f"{cause['rule']} ({ref.get('stream')} v{ref.get('version')})"
            if "trigger" in cause:
                why += f" on {cause['trigger']['type']} v{cause['trigger']['version']}"
        cells = (
            e["version"],
            e["type"],
            e["effective_at"],
            e["recorded_at"],
            details,
            why,
            asked_by,
        )
        table.add_row(*(escape(str(cell)) for cell in cells))
    out.print(table)
    return EXIT_OK


def _cause_text(cause: dict[str, Any] | None) -> str:
    if not cause:
        return ""
    ref = cause.get("rule_event") or {}
    why = f"{cause.get('rule')} ({ref.get('stream')} v{ref.get('version')})"
    if "trigger" in cause:
        why += f" on {cause['trigger'].get('type')} v{cause['trigger'].get('version')}"
    return why


def _history_as_known(engine: Engine, args: argparse.Namespace) -> int:
    """The history as it was known at K: events recorded by K, and the account's rejected
    commands recorded by K beside them, in log order (`kind` tells them apart)."""
    entries = audit.history(engine, args.account, args.as_known_at, rejections=True)
    if args.json:
        print(json.dumps(entries))
        return EXIT_OK
    known = f", as known at {args.as_known_at}" if args.as_known_at else ""
    table = Table(
        title=escape(f"history of {args.account}{known} (log order, with rejections)"),
        title_justify="left",
    )
    for col in ("position", "kind", "what", "effective_at", "recorded_at", "details", "asked by"):
        table.add_column(col)
    for e in entries:
        asked_by = " ".join(x for x in (e.get("actor"), _given_id(e.get("command_id"))) if x)
        if e["kind"] == "event":
            what = f"{e['type']} v{e['version']}"
            details = ", ".join(f"{k}={v}" for k, v in e["data"].items())
            cause = _cause_text(e["cause"])
            details = f"{details}; cause: {cause}" if cause else details
            kind = "event"
        else:
            what, details, kind = e["command"], f"rejected: {e['reason']}", "[red]rejection[/]"
        cells = (str(e.get("position") or ""), what, e["effective_at"], e["recorded_at"])
        table.add_row(
            escape(cells[0]),
            kind,
            *(escape(c) for c in cells[1:]),
            escape(details),
            escape(asked_by),
        )
    out.print(table)
    return EXIT_OK


# -- explain and the audits ---------------------------------------------------------------


def _event_line(e: dict[str, Any]) -> str:
    who = " ".join(x for x in (e.get("actor"), _given_id(e.get("command_id"))) if x)
    return (
        f"{e['type']} v{e['version']} of {e['stream']} (effective {e['effective_at']}, "
        f"recorded {e['recorded_at']}{', asked by ' + who if who else ''})"
    )


def cmd_explain(engine: Engine, args: argparse.Namespace) -> int:
    """The decision, since and until when it holds, and the chain of events behind it: a
    short paragraph, each line unwrapped (a person reads it, grep finds it)."""

    def say(text: str) -> None:
        out.print(text, soft_wrap=True)

    x = audit.explain(engine, args.account, args.capability, args.at, args.as_known_at)
    if args.png is not None:
        x["png"] = _explain_picture(engine, x, args.png)
    if args.json:
        print(json.dumps(x))
        return EXIT_OK
    held = x["holds"]
    since = f"since {held['since']}" if held["since"] else "since the beginning"
    until = f"until {held['until']}" if held["until"] else "with no end on file"
    known = f" as known at {x['as_known_at']}" if x["as_known_at"] else ""
    d = Decision(x["account_id"], x["capability"], x["allowed"], x["value"], x["reason"], (), 0)
    say(
        f"{escape(x['account_id'])} {escape(x['capability'])} at {escape(x['at'])}{escape(known)}: "
        f"{_yes_no(d)} — {escape(x['reason'])}."
    )
    say(escape(f"This holds in effective time {since}, {until}{known}."))
    for link in x["because"]:
        say("  because " + escape(_event_line(link)))
        rule = link.get("rule")
        if rule:
            text = f"    caused by rule {rule['rule']} in {rule['region']}"
            if rule.get("event"):
                text += ", switched on by " + _event_line(rule["event"])
            say(escape(text))
            if isinstance(rule.get("trigger"), dict) and "stream" in rule["trigger"]:
                trig = rule["trigger"]
                say(
                    escape(
                        "    made necessary by "
                        + (
                            _event_line(trig)
                            if "effective_at" in trig
                            else f"{trig['type']} v{trig['version']}"
                        )
                    )
                )
    if not x["because"]:
        say("  no event decided it (nothing on file says otherwise)")
    if not x["check_agrees"]:
        say("[red]warning:[/] the domain fold disagrees with the check index here")
    say(f"  [dim]log position {x['position']}[/]")
    return EXIT_OK


def _explain_picture(engine: Engine, x: dict[str, Any], path: str) -> str:
    """Draw the bitemporal picture of an explained decision into `path`, whole or not at
    all, and say where on stderr; a path that cannot be written is one line naming --png."""
    from entitlements import pictures  # matplotlib loads only when a picture is asked for

    try:
        target = pictures.writable_target(path)  # before drawing: a bad path fails fast
        rectangles = audit.bitemporal(engine, x["account_id"], x["capability"])
        pictures.save_png(pictures.bitemporal_figure(rectangles, x), target)
    except OSError as e:
        raise ValueError(f"--png: cannot write {path!r}: {e.strerror or e}") from None
    err.print(f"picture written to {escape(path)}", soft_wrap=True)
    return path


def cmd_audit_jurisdiction(engine: Engine, args: argparse.Namespace) -> int:
    """Exit 0 when no command under REGION's jurisdiction changed an account outside it, 6
    when the log shows one did (each violation printed)."""
    report = audit.jurisdiction(engine, args.region)
    code = EXIT_OK if report["holds"] else EXIT_VIOLATION
    if args.json:
        print(json.dumps(report))
        return code
    r = report["region"]
    out.print(
        escape(f"Jurisdiction {r}, from the log up to position {report['head']['position']}:")
    )
    table = Table(
        title=escape(f"commands under {r}'s jurisdiction (applied)"), title_justify="left"
    )
    for col in ("position", "command", "asked by", "effective_at", "accounts changed", "proof"):
        table.add_column(col)
    for c in report["commands"]:
        accounts = ", ".join(f"{a['account_id']} ({a['region']})" for a in c["accounts"])
        who = " ".join(x for x in (c.get("actor"), _given_id(c.get("command_id"))) if x)
        cells = (str(c["position"]), c["command"], who, c["effective_at"], accounts, c["proof"])
        table.add_row(*(escape(x) for x in cells))
    out.print(table)
    table = Table(
        title=escape(f"{r}'s region rules and the accounts they reached"), title_justify="left"
    )
    for col in ("position", "command", "effective_at", "accounts changed"):
        table.add_column(col)
    for c in report["rule_commands"]:
        accounts = ", ".join(f"{a['account_id']} ({a['region']})" for a in c["accounts"]) or "-"
        table.add_row(
            *(escape(x) for x in (str(c["position"]), c["command"], c["effective_at"], accounts))
        )
    out.print(table)
    table = Table(title=escape(f"rejected attempts under {r}'s jurisdiction"), title_justify="left")
    for col in ("position", "command", "account", "asked by", "effective_at", "reason"):
        table.add_column(col)
    for c in report["rejected"]:
        who = " ".join(x for x in (c.get("actor"), _given_id(c.get("command_id"))) if x)
        account = f"{c['account_id']} ({c['account_region']})"
        cells = (str(c["position"]), c["command"], account, who, c["effective_at"], c["reason"])
        table.add_row(*(escape(x) for x in cells))
    out.print(table)
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
        return code
    for v in report["violations"]:
        out.print(
            "[red]VIOLATION[/] "
            + escape(
                f"at position {v['position']}: {v['violation']}"
                + (f" (command {v['command_id']})" if v.get("command_id") else "")
            )
        )
    return code


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


# -- the rejection log -------------------------------------------------------------------


def cmd_rejections(engine: Engine, args: argparse.Namespace) -> int:
    """Every rejected command, in log order: as given, who asked, why, both clocks."""
    entries = engine.rejections(account_id=args.account, region=args.region)
    if args.json:
        print(json.dumps(entries))
        return EXIT_OK
    scope = (
        " ".join(
            x
            for x in (
                args.account and f"account {args.account}",
                args.region and f"region {args.region}",
            )
            if x
        )
        or "every command"
    )
    table = Table(title=escape(f"rejected commands ({scope}, log order)"), title_justify="left")
    for col in ("position", "command", "subject", "actor", "effective_at", "recorded_at", "reason"):
        table.add_column(col)
    for e in entries:
        subject = e["account_id"] or e["region"] or ""
        cells = (
            str(e["position"]),
            e["command"],
            subject,
            e.get("actor") or "",
            e["effective_at"],
            e["recorded_at"],
            e["reason"],
        )
        table.add_row(*(escape(c) for c in cells))
    out.print(table)
    if not entries:
        out.print("no rejected command on file")
    return EXIT_OK


# -- read models -------------------------------------------------------------------------


class _Bars:
    """Progress bars on stderr, one line each, all labelled `label`: a bar appears at its
    first update, so a run with nothing to count shows none."""

    def __init__(self, label: str) -> None:
        self.progress = Progress(
            TextColumn(f"[bold]{label}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
            redirect_stdout=False,  # stdout stays the data's, even when stderr is a terminal
            redirect_stderr=False,
        )
        self.started = False

    def bar(
        self, unit: Callable[[], str], offset: Callable[[], int] = lambda: 0
    ) -> Callable[[int, int], None]:
        """An update(done, total) for one bar, counting from `offset` (read at the first
        update); its `unit` is read then too."""
        shown: list[TaskID] = []
        base: list[int] = []

        def update(done: int, total: int) -> None:
            if not shown:
                if not self.started:
                    self.progress.start()
                    self.started = True
                base.append(offset())
                shown.append(self.progress.add_task("", total=None, unit=unit(), rate=""))
            task = self.progress.tasks[shown[0]]
            elapsed = task.elapsed or 0
            counted = done - base[0]
            rate = f"{counted / elapsed:,.0f}/s" if elapsed > 0.1 else ""
            self.progress.update(shown[0], completed=counted, total=total - base[0], rate=rate)

        return update

    def stop(self) -> None:
        if self.started:
            self.progress.stop()


def cmd_rebuild(engine: Engine, args: argparse.Namespace) -> int:
    """The bars count the log's events exactly (read to the target, then caught up to the
    head) and the accounts whose rows are written; a resumed rebuild says so first."""
    started = time.perf_counter()
    bars = _Bars("rebuild")
    resumed: list[Resumed] = []

    def say_resumed(r: Resumed) -> None:
        resumed.append(r)
        done = (
            "every row is written already; the tables are caught up from there"
            if r.rows_done
            else f"the rows of {r.accounts:,} accounts are written already, not again"
        )
        err.print(
            f"rebuild resumes an interrupted rebuild to log position {r.target:,}: {done} "
            "(the log is read again)",
            soft_wrap=True,
        )

    try:
        position = rebuild(
            engine.app,
            engine.url,
            bars.bar(lambda: "events"),
            accounts=bars.bar(lambda: "accounts' rows"),
            resumed=say_resumed,
        )
    finally:
        bars.stop()
    seconds = time.perf_counter() - started
    summary = {
        "position": position,
        "seconds": round(seconds, 2),
        "events_per_second": round(position / seconds) if seconds else None,
        "resumed": {"target": resumed[0].target, "accounts": resumed[0].accounts}
        if resumed
        else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        out.print(
            f"rebuilt every read model up to log position {position} in {seconds:.1f} s "
            f"({summary['events_per_second'] or 0:,} events/s); check-index snapshot saved"
        )
    return EXIT_OK


def cmd_reconcile(engine: Engine, args: argparse.Namespace) -> int:
    recorded = engine.reconcile(args.region)
    out.print(
        f"hosting fan-out complete{escape(' in ' + args.region) if args.region else ''}: "
        f"{recorded} missing event(s) recorded"
    )
    return EXIT_OK


def cmd_catch_up(engine: Engine, args: argparse.Namespace) -> int:
    """The bar counts the events read, past the position the tables were at (none: no bar)."""
    projection = SqlProjection.current(engine.app, engine.url)  # kept: polls read what is new
    bars = _Bars("catch-up")

    def unit() -> str:
        return f"events past log position {projection.read_from:,}"

    try:
        position = projection.run(bars.bar(unit, lambda: projection.read_from))
    finally:
        bars.stop()
    read = position - projection.read_from
    out.print(
        f"SQL read models at log position {position}"
        + (f" ({read:,} events read past {projection.read_from})" if read else ": nothing new")
    )
    while args.follow:  # pragma: no cover - interactive
        time.sleep(args.interval)
        position = projection.run()
    return EXIT_OK


def cmd_report(engine: Engine, args: argparse.Namespace) -> int:
    """Daily counts per plan from the SQL read models (brought level with the log first)."""
    start, end = report.parse_day(args.from_, "--from"), report.parse_day(args.to, "--to")
    report.check_range(start, end)
    capabilities = args.capability or ["host"]
    report.check_capabilities(capabilities)
    known = parse_time_option(args.as_known_at, "--as-known-at")
    behind = report.read_models_level(engine.app, engine.url)
    if behind:
        err.print(f"SQL read models caught up ({behind} log positions behind)")
    counts = report.daily_report(engine.url, args.region, start, end, known, capabilities)
    if args.png:
        try:
            report.plot(counts, Path(args.png))
        except OSError as e:
            raise ValueError(f"--png: cannot write {args.png}: {e.strerror or e}") from None
        err.print(f"picture written to {escape(args.png)}", soft_wrap=True)
    if args.json:
        print(json.dumps(report.as_json(counts)))
    elif args.csv:
        sys.stdout.write(report.as_csv(counts))
    else:
        for table in report.as_tables(counts):
            out.print(table)
    return EXIT_OK


def parse_time_option(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given to an option, or None; a bad one names the option."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


# -- the HTTP door -----------------------------------------------------------------------


def cmd_serve(_: Engine | None, args: argparse.Namespace) -> int:
    """Serve the HTTP API (entitlements/http/server.py: granian, worker processes); every worker
    opens its own engine (own index, warm-started from the snapshot, following the log).
    SIGTERM lets requests in flight finish."""
    from entitlements.http import server as serving

    url = store_url(args.db)
    try:
        check_store(url, must_exist=False)  # a wrong URL says so now, not in every worker
    except StoreUnavailable as e:  # down for now: the workers start and keep trying
        err.print(f"warning: {escape(str(e))}; the workers will keep trying (see /healthz)")
    try:
        serving.check_address(args.host, args.port)
    except serving.AddressInUse as e:
        raise ValueError(f"--port {args.port}: {e}") from None
    err.print(
        f"serving {escape(url)} on http://{args.host}:{args.port} with {args.workers} worker(s)"
    )
    serving.run(
        url,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_staleness=args.max_staleness,
        header_timeout=args.header_timeout,
        log_level=args.log_level,
    )
    return EXIT_OK


# -- demo --------------------------------------------------------------------------------

DEMO_DATES = ("2020-05-18", "2020-05-19", "2020-06-15", "2020-08-24", "2020-10-01", "2020-10-15")
DEMO_CAPS = (
    "join",
    "host",
    "subscribe_online",
    "purchase_direct",
    "purchase_via_partner",
    "max_participants",
)


def cmd_demo(_: Engine | None, args: argparse.Namespace) -> int:
    """The story in a store of its own: at `--db X` (a new SQLite file, kept to explore),
    else in a temporary folder removed when the demo ends (nothing is left behind)."""
    if args.db is None:  # never $ENTITLEMENTS_DB: that names a store of real data
        with tempfile.TemporaryDirectory(prefix="entitlements-demo-") as folder:
            _demo(Path(folder) / "china-2020.db", None)
        return EXIT_OK
    path = _demo_target(args.db)
    _demo(path, args.db)
    return EXIT_OK


def _demo_target(db: str) -> Path:
    """The SQLite file `--db` names for the demo: new (or empty), or the demo's own store
    from an earlier run (run again, it records nothing twice); never a store of data."""
    path = sqlite_path(db)
    if path is None:
        raise ValueError(f"--db: the demo builds an SQLite file; give a file path, not {db!r}")
    if path.is_dir() or (path.exists() and path.stat().st_size > 0 and not _is_demo(path)):
        raise ValueError(
            f"--db: {path} exists already and is not the demo's store; the demo builds a new "
            "store (remove it, or give another path)"
        )
    return path


def _is_demo(path: Path) -> bool:
    """Whether the file is an entitlements store whose log is exactly the demo's: its head
    (position and integrity hash) that of the story applied to a new store. Read-only until
    then, so a file of anything else is never opened as a store (nor written)."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return False
    if "stored_events" not in tables:
        return False
    with (
        tempfile.TemporaryDirectory(prefix="entitlements-demo-") as folder,
        open_engine(f"sqlite:///{Path(folder) / 'demo.db'}") as fresh,
    ):
        fresh.apply_parsed(parse_command_file(scenario_path()))
        story = audit.log_head(fresh)
    with open_engine(f"sqlite:///{path}") as theirs:
        return audit.log_head(theirs) == story


def _demo(path: Path, kept: str | None) -> None:
    """Apply the story to a new store at `path` and show what it answers; `kept` is the
    --db it was given (the store stays), or None (it goes with the demo)."""
    url = f"sqlite:///{path}"
    where = escape(str(path)) if kept else "a temporary file, removed at the end"
    out.print(f"[bold]china-2020[/] on a fresh SQLite store: {where}\n")
    commands = parse_command_file(scenario_path())
    with open_engine(url) as engine:
        results = engine.apply_parsed(commands)
        table = Table(title="1. The command file, applied in order", title_justify="left")
        for col in ("line", "command", "subject", "effective", "result"):
            table.add_column(col)
        for (n, cmd), r in zip(commands, results, strict=True):
            subject = getattr(cmd, "account_id", None) or getattr(cmd, "region", "")
            result = (
                "[green]applied[/]"
                if r.status == "applied"
                else f"[red]rejected[/]: {escape(str(r.reason))}"
            )
            table.add_row(
                str(n),
                escape(cmd.command),
                escape(str(subject)),
                cmd.effective_at.date().isoformat(),
                result,
            )
        out.print(table)

        registered = {
            c.account_id: c.effective_at.date().isoformat()
            for (_, c), r in zip(commands, results, strict=True)
            if c.command == "register_account" and r.status == "applied"
        }
        for date in DEMO_DATES:
            accounts = sorted(a for a, since in registered.items() if since <= date)
            table = Table(title=f"\n2. What each account could do on {date}", title_justify="left")
            table.add_column("account")
            for cap in DEMO_CAPS:
                table.add_column(cap.replace("_", " "), justify="center")
            for account in accounts:
                decisions = {d.capability: d for d in engine.capabilities(account, at=date)}
                table.add_row(escape(account), *(_yes_no(decisions[c]) for c in DEMO_CAPS))
            out.print(table)

        out.print(
            "\n[bold]3. What did we believe?[/] cn-ent-02's hosting was revoked on 2020-11-01, backdated to 2020-09-15:"
        )
        for known in ("2020-10-20", None):
            d = engine.check("cn-ent-02", "host", at="2020-10-01", as_known_at=known)
            label = f"as known at {known}" if known else "as known now"
            out.print(f"  host at 2020-10-01 {label}: {_yes_no(d)} — {escape(d.reason)}")

        if kept:
            _demo_picture(engine, path)
    if kept is None:
        out.print(
            "\nTo keep the store (and the picture of CN's hosting in 2020) and explore it: "
            "[bold]entitlements demo --db demo.db[/]",
            soft_wrap=True,
        )
        return
    db = escape(shlex.quote(kept))  # to paste as it is, spaces and all
    out.print(
        f"\nExplore it: [bold]entitlements history cn-free-02 --db {db}[/]\n"
        f"            [bold]entitlements check cn-pro-01 host --at 2020-10-01 --json --db {db}[/]\n"
        f"            [bold]entitlements report CN --from 2020-09-01 --to 2020-10-31 --as-known-at 2020-10-20 --db {db}[/]",
        soft_wrap=True,
    )


def _demo_picture(engine: Engine, path: Path) -> None:
    """Section 4: CN's daily hosting counts of 2020, drawn next to the demo's store."""
    report.read_models_level(engine.app, engine.url)
    picture = path.with_name("cn-2020-host.png")
    first, last = datetime(2020, 1, 1).date(), datetime(2020, 12, 31).date()
    year = report.daily_report(engine.url, "CN", first, last)
    report.plot(year, picture)
    out.print(
        "\n[bold]4. How many CN accounts could host, day by day in 2020[/] (per plan, "
        f"as known now): {escape(str(picture))}",
        soft_wrap=True,
    )


# -- API tokens --------------------------------------------------------------------------

TOKEN_HELP = """\
Bearer tokens for the HTTP API (`entitlements serve`). Each token has a name (who is
calling: the `actor` of the commands it posts, unless they give one) and a role. Roles
nest, each may do what the ones above it may:

  checker   checks, capabilities, changes                   e.g. the meeting service
  auditor   + history, explain, rejections, audit/verify    e.g. compliance
  admin     + commands                                      e.g. operators

Only a SHA-256 hash of each token is stored, in the store's own database: a token is
shown once, when created. A revocation counts at once, on every worker and host.
Names are never reused, even once revoked.

  entitlements token create --role checker --name meetings-svc
  entitlements token list
  entitlements token revoke meetings-svc
  curl -H "Authorization: Bearer ent_..." http://127.0.0.1:8080/v1/accounts/u-42/can/host
"""


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def cmd_token_create(engine: Engine, args: argparse.Namespace) -> int:
    """The secret goes to stdout once, as the last word of the last line (scripts take it
    with `| tail -1 | awk '{print $NF}'`, or use --json); it cannot be shown again."""
    with TokenStore(engine.url) as tokens:
        secret = tokens.create(args.name, args.role)
    if args.json:
        print(json.dumps({"name": args.name, "role": args.role, "token": secret}), flush=True)
        return EXIT_OK
    # print, not rich: the token must never be wrapped or styled
    print(
        f"keep it secret: only its hash is stored; `entitlements token revoke {args.name}` ends it"
    )
    print(f"token for {args.name} (role {args.role}), shown once: {secret}", flush=True)
    return EXIT_OK


def cmd_token_list(engine: Engine, args: argparse.Namespace) -> int:
    """Every token: name, role, when created and revoked (never a secret)."""
    with TokenStore(engine.url) as tokens:
        listed = [
            {**t, "created_at": _iso(t["created_at"]), "revoked_at": _iso(t["revoked_at"])}
            for t in tokens.list()
        ]
    if args.json:
        print(json.dumps(listed))
        return EXIT_OK
    table = Table(title="API tokens, oldest first (secrets are never stored)", title_justify="left")
    for col in ("name", "role", "created_at", "status"):
        table.add_column(col)
    for t in listed:
        status = (
            f"[red]revoked[/] {escape(t['revoked_at'])}" if t["revoked_at"] else "[green]valid[/]"
        )
        table.add_row(escape(t["name"]), escape(t["role"]), escape(t["created_at"] or ""), status)
    out.print(table)
    if not listed:
        out.print("no token yet: entitlements token create --role checker --name NAME")
    return EXIT_OK


def cmd_token_revoke(engine: Engine, args: argparse.Namespace) -> int:
    """Revoke NAME's token: every worker refuses it from its next request."""
    with TokenStore(engine.url) as tokens:
        found = tokens.revoke(args.name)
    if not found:
        err.print(
            "[red]error:[/] "
            + escape(f"no token named {args.name!r} (see `entitlements token list`)"),
            soft_wrap=True,
        )
        return EXIT_MALFORMED
    out.print(f"token {escape(args.name)} revoked: it no longer authenticates, on any worker")
    return EXIT_OK


# -- wiring ------------------------------------------------------------------------------


def _time_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", metavar="T", help="effective time to ask about (default: now)")
    p.add_argument(
        "--as-known-at", metavar="K", help="only what was recorded by K (default: everything)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument(
        "--min-position",
        type=int,
        metavar="N",
        help="answer only from an index that reached log position N (read your writes: "
        "`apply` prints the position reached); waits up to 2 s, else exit 5",
    )


def positive_int(text: str) -> int:
    """An option's whole number of 1 or more (argparse names the option on error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


def positive_float(text: str) -> float:
    """An option's number of seconds, above 0 and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 and finite, not {text}")
    return value


DB_HELP = (
    f"store URL: sqlite:///path or postgresql://user@host/db (default: ${ENV_VAR}, else "
    f"{DEFAULT_URL}); before or after the command, anywhere among its arguments"
)


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser: it takes `--db` too, so the option goes anywhere on the line
    (`entitlements check A host --db X`). Its default is SUPPRESS, so a subcommand without
    it keeps what the main parser read; nested subcommands are of this class as well."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help=DB_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entitlements",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", metavar="URL", help=DB_HELP)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Subcommand
    )

    p = sub.add_parser(
        "apply",
        help="apply a JSON Lines command file (validated whole first)",
        description="Validate the whole file, one line at a time (a malformed line refuses "
        "it: exit 2, nothing applied, no store created), then read it again and apply each "
        "line in order and print its JSON result as soon as it "
        "is committed. Each line is a command with a command_id (given, or derived from "
        "the line's content): run the file again after a crash, or twice, and lines "
        "already on file are reported as duplicates, nothing is recorded twice. "
        "Exit 0 if all applied, 1 if any was rejected by a domain rule.",
    )
    p.add_argument("file", help="the command file, one JSON command per line")
    p.set_defaults(run=cmd_apply, no_engine=True)  # it opens the store once the file is valid

    p = sub.add_parser(
        "check",
        help="may ACCOUNT do CAPABILITY?",
        description=f"Capabilities: {', '.join(CAPABILITIES)}. Exit 0 whatever the "
        "answer; 3 for an account never recorded; 2 for a bad capability or time.",
    )
    p.add_argument("account")
    p.add_argument("capability", metavar="capability", help=" | ".join(CAPABILITIES))
    _time_options(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("capabilities", help="every capability of ACCOUNT at once")
    p.add_argument("account")
    _time_options(p)
    p.set_defaults(run=cmd_capabilities)

    p = sub.add_parser(
        "history",
        help="the account's events, both clocks and causes, in log order",
        description="Every event of ACCOUNT in log order, with both clocks, causes and who "
        "asked. With --as-known-at K: only what was recorded by K, and the account's "
        "rejected commands recorded by K beside the events (a `kind` column / field: "
        "event or rejection), each with its log position.",
        epilog="examples:\n  entitlements history cn-ent-02\n"
        "  entitlements history cn-ent-02 --as-known-at 2020-10-20 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("account")
    p.add_argument(
        "--as-known-at", metavar="K", help="only what was recorded by K (adds the rejections)"
    )
    p.add_argument(
        "--rejections", action="store_true", help="show the rejected commands beside the events"
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=cmd_history)

    p = sub.add_parser(
        "explain",
        help="why ACCOUNT may (not) do CAPABILITY, since and until when, and the events behind it",
        description="The decision `check` gives at (T, K); the effective interval around T "
        "over which it stays the same (as known at K); and the chain behind it: each "
        "deciding event (both clocks, who asked, command_id) and, for one a region rule "
        "caused, the rule and the region event that switched it on. Exit 0 whatever the "
        "answer; 3 for an account never recorded; 2 for a bad capability or time.",
        epilog="example:\n  entitlements explain cn-free-01 host --at 2020-05-19\n"
        "  cn-free-01 host at 2020-05-19T00:00:00Z: no — hosting revoked by "
        "free_hosting_suspended in CN ...\n"
        "  entitlements explain cn-ent-02 host --at 2020-10-01 --as-known-at 2020-10-20 --json\n"
        "  entitlements explain cn-ent-02 host --png cn-ent-02-host.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("account")
    p.add_argument("capability", metavar="capability", help=" | ".join(CAPABILITIES))
    p.add_argument("--at", metavar="T", help="effective time to ask about (default: now)")
    p.add_argument(
        "--as-known-at", metavar="K", help="only what was recorded by K (default: everything)"
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument(
        "--png",
        metavar="FILE",
        help="also draw the bitemporal picture into FILE: effective time across, recorded "
        "time up, each rectangle coloured by the answer (--json: its path in `png`)",
    )
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser(
        "audit",
        help="auditors' proofs from the log: jurisdiction, export, verify",
        description="Read-only questions answered from the log itself.",
    )
    audit_sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    a = audit_sub.add_parser(
        "jurisdiction",
        help="show that no command under REGION's jurisdiction changed an account outside it",
        description="Walks the command records (applied and rejected) and the account "
        "events, and lists: the applied commands under REGION's jurisdiction with the "
        "accounts they changed and their regions (all must be REGION), REGION's own rule "
        "commands with the accounts they reached, and every rejected attempt under REGION's "
        "jurisdiction with its reason. An applied command's record keeps its jurisdiction; "
        "for records older than that field, it is proved from the command's SHA-256 "
        "fingerprint (see README, For auditors). "
        "Exit 0 when the promise holds, 6 when a violation is found (printed).",
        epilog="example:\n  entitlements audit jurisdiction CN\n"
        "  entitlements audit jurisdiction CN --json | jq .violations",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("region", metavar="REGION", help="a region code, e.g. CN")
    a.add_argument("--json", action="store_true", help="print JSON for machines")
    a.set_defaults(run=cmd_audit_jurisdiction)
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("account", nargs="?", metavar="ACCOUNT", help="the account (or --region)")
    a.add_argument("--region", metavar="R", help="every account of region R, and its rules")
    a.add_argument("--from", dest="from_", metavar="T", help="window start (effective time)")
    a.add_argument("--to", metavar="T", help="window end (effective time, inclusive)")
    a.add_argument("--format", required=True, choices=("json", "csv"), help="json or csv")
    a.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    a.set_defaults(run=cmd_audit_export)
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--receipt", metavar="HASH@POSITION", help="a head written down earlier")
    a.add_argument("--json", action="store_true", help="print JSON for machines")
    a.set_defaults(run=cmd_audit_verify, lazy_index=True)

    p = sub.add_parser(
        "rejections",
        help="the rejection log: every rejected command, who asked and why",
        description="Lists every command a domain rule rejected, in log order: the "
        "command as given, its command_id and actor, the reason, and both clocks "
        "(recorded_at is when the rejection was recorded). Rejections survive "
        "restarts; they change no account and no region.",
    )
    p.add_argument("--account", metavar="A", help="only commands on this account")
    p.add_argument("--region", metavar="R", help="only commands on this region or its accounts")
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=cmd_rejections)

    p = sub.add_parser(
        "rebuild",
        help="rebuild every read model from the log, with progress",
        description="Rebuilds the SQL read models (the tables accounts, "
        "account_state_intervals and region_state_intervals, and their views "
        "capability_intervals, capabilities_now and capability_day_changes) and the "
        "check-index snapshot from the whole log, in large batches, into fresh tables swapped in at the end: checks keep answering meanwhile. "
        "Killed halfway, run it again: it resumes where it stopped and ends at the log's head. "
        "Run it as often as you like.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(run=cmd_rebuild, lazy_index=True)

    p = sub.add_parser(
        "catch-up",
        help="bring the SQL read models up to the log (incremental)",
        description="Writes the rows of the accounts that changed since the read "
        "models' tracked position, exactly once.",
    )
    p.add_argument("--follow", action="store_true", help="keep following the log")
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --follow"
    )
    p.set_defaults(run=cmd_catch_up, lazy_index=True)

    p = sub.add_parser(
        "report",
        help="analysts: how many of REGION's accounts had a capability each day, per plan",
        description="For each day from --from to --to (both inclusive), how many of "
        "REGION's accounts may do the capability (default: host), per plan (the plan the "
        "account had then) and in total, counted at 00:00 UTC of the day: the number of "
        "accounts for which `check ACCOUNT CAPABILITY --at DAY --as-known-at K` says yes. "
        "The region's rule switches are shown on their day. The counts come from the SQL "
        "read models (the view capability_day_changes), caught up with the log first. "
        "At most five years of days.",
        epilog="examples:\n  entitlements report CN --from 2020-01-01 --to 2020-12-31 --png cn-2020.png\n"
        "  entitlements report CN --from 2020-09-01 --to 2020-10-31 --as-known-at 2020-10-20 --csv\n"
        "  entitlements report CN --from 2020-05-01 --to 2020-06-30 --capability host "
        "--capability subscribe_online --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("region", metavar="REGION", help="a region code, e.g. CN")
    p.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="DATE",
        help="first day, YYYY-MM-DD (inclusive)",
    )
    p.add_argument("--to", required=True, metavar="DATE", help="last day, YYYY-MM-DD (inclusive)")
    p.add_argument(
        "--as-known-at", metavar="K", help="only what was recorded by K (default: everything)"
    )
    p.add_argument(
        "--capability",
        action="append",
        metavar="C",
        help=f"a capability to count (repeatable; default host): {' | '.join(CAPABILITIES)}",
    )
    p.add_argument("--png", metavar="FILE", help="also draw the counts over time into FILE")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    shape.add_argument("--json", action="store_true", help="print JSON for machines")
    p.set_defaults(run=cmd_report, lazy_index=True)

    p = sub.add_parser(
        "token",
        help="API tokens for `entitlements serve`: create, list, revoke",
        description=TOKEN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token_sub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = token_sub.add_parser(
        "create",
        help="a new token, printed once (the last word of the last line)",
        description="Creates a token for NAME with ROLE and prints it once, as the "
        "last word of the last line (--json: {name, role, token}). Only its hash is "
        "stored: keep it, it cannot be shown again. Creates the store if it does not "
        "exist yet. Exit 2 for a name already in use (even revoked) or a bad name.",
    )
    t.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="checker (checks) < auditor (+ history, rejections, audit) < admin (+ commands)",
    )
    t.add_argument(
        "--name",
        required=True,
        metavar="NAME",
        help="who will use it, 1-64 of A-Za-z0-9._:@- (e.g. meetings-svc, ops@example)",
    )
    t.add_argument("--json", action="store_true", help="print JSON for machines")
    t.set_defaults(run=cmd_token_create, lazy_index=True, store_must_exist=False)
    t = token_sub.add_parser(
        "list", help="every token: name, role, created, revoked (never a secret)"
    )
    t.add_argument("--json", action="store_true", help="print JSON for machines")
    t.set_defaults(run=cmd_token_list, lazy_index=True)
    t = token_sub.add_parser(
        "revoke",
        help="revoke NAME's token: refused at once, on every worker",
        description="Revokes the token named NAME: every worker and host refuses "
        "it from its next request (401). Revoking twice is fine (exit 0); an "
        "unknown name is exit 2. The name stays taken.",
    )
    t.add_argument("name", metavar="NAME")
    t.set_defaults(run=cmd_token_revoke, lazy_index=True)

    p = sub.add_parser(
        "reconcile",
        help="record any hosting event a region rule still lacks (idempotent)",
        description="Records the HostingRevoked / HostingRestored events that a region "
        "rule's fan-out has not recorded yet. Rarely needed: after a crash halfway, the next "
        "writer (any command) finishes the fan-out by itself. Running it when nothing is "
        "missing records nothing.",
    )
    p.add_argument("--region", help="only this region (default: every region)")
    p.set_defaults(run=cmd_reconcile)

    p = sub.add_parser(
        "serve",
        help="serve the HTTP API (checks, commands, audits) on a port",
        description="Serves the HTTP API of INTERFACES.md: checks for the meeting service, "
        "history and rejections for auditors, commands for admins, /healthz, /metrics and "
        "/openapi.json. Every request but /healthz and /metrics needs a bearer token "
        "(`entitlements token create`). Each worker holds its own index and follows the log.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8080, help="port (default: 8080)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="worker processes, about one a core (default: 1)",
    )
    p.add_argument(
        "--max-staleness",
        type=positive_float,
        default=MAX_STALENESS,
        metavar="SECONDS",
        help="while a worker cannot read the store it answers from memory and /healthz says "
        "degraded (200); past this many seconds /healthz answers 503, so a load balancer "
        "takes the worker out (default: %(default)g)",
    )
    p.add_argument(
        "--header-timeout",
        type=positive_float,
        default=HEADER_TIMEOUT,
        metavar="SECONDS",
        help="a connection that takes longer to send a request's headers, or stays idle "
        "between requests this long, is closed (default: %(default)g)",
    )
    p.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(run=cmd_serve, no_engine=True)

    p = sub.add_parser(
        "demo",
        help="run the china-2020 story on a fresh SQLite store and show the answers",
        description="Applies the china-2020 command file to a new SQLite store and shows "
        "what it answers. With --db FILE the store is built there (FILE must not exist, "
        "or be empty) and kept, with its picture cn-2020-host.png beside it, to explore "
        "with the other commands; without --db it lives in a temporary folder removed "
        "when the demo ends. $ENTITLEMENTS_DB is never used: it names a store of data.",
    )
    p.set_defaults(run=cmd_demo, no_engine=True)
    return parser


def _first_line(e: BaseException) -> str:
    """The cause in one line: for SQLAlchemy errors the driver's own message (`e.orig`),
    never the SQL statement nor the "Background on this error" link on later lines."""
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return lines[0].strip() if lines else type(cause).__name__


def _fail(label: str, e: BaseException, code: int, suffix: str = "") -> int:
    """Print one error line on stderr (escaped, never wrapped: logs grep it) and return code."""
    head = f"[red]{label}:[/] " if label else ""
    err.print(head + escape(_first_line(e) + suffix), soft_wrap=True)
    return code


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[Any, argparse.Namespace], int] = args.run
    try:
        if getattr(args, "no_engine", False):
            return handler(None, args)
        lazy = getattr(args, "lazy_index", False)
        must_exist = getattr(args, "store_must_exist", True)  # `token create` may start one
        with Engine(args.db, start=not lazy, must_exist=must_exist) as engine:
            return handler(engine, args)
    except MalformedCommand as e:
        return _fail("malformed", e, EXIT_MALFORMED, " (nothing applied)")
    except UnknownAccount as e:
        return _fail("error", e, EXIT_UNKNOWN_ACCOUNT)
    except PositionNotReached as e:
        return _fail("not reached", e, EXIT_NOT_REACHED)
    except DamagedRecord as e:  # before ValueError: the library's error was one
        return _fail("damaged record", e, EXIT_STORE)
    except (ValueError, StoreError, FileNotFoundError, IsADirectoryError) as e:
        return _fail("error", e, EXIT_MALFORMED)
    except (PersistenceError, SQLAlchemyError) as e:
        return _fail("store error", e, EXIT_STORE)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # stdout's reader went away: main() ends quietly, 141
        raise
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("ENTITLEMENTS_DEBUG"):
            raise
        return _fail(
            f"error: {type(e).__name__}",
            e,
            EXIT_STORE,
            " (ENTITLEMENTS_DEBUG=1 shows the traceback)",
        )


def main() -> None:
    """The console script. Whichever command was printing when stdout's reader went away
    (`entitlements ... | head -1`) exits 141 (128 + SIGPIPE, as a shell reports it),
    quietly: no traceback, no error at the interpreter's last flush."""
    try:
        try:
            code = run()
        finally:  # also after argparse's own exit (--help)
            sys.stdout.flush()
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    if code == EXIT_BROKEN_PIPE:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)
