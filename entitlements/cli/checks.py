"""The questions about one account: check, capabilities, history and explain."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from entitlements.application import audit
from entitlements.application.engine import Engine
from entitlements.cli.exits import EXIT_OK
from entitlements.cli.output import asked_by, err, out, yes_no
from entitlements.cli.parsers import Declare, Subparsers, as_known_at_option, json_option
from entitlements.domain.decisions import Decision
from entitlements.domain.rules import CAPABILITIES


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
        f"{escape(d.account_id)} {escape(d.capability)} {_when(args)}: {yes_no(d)} — {escape(d.reason)}"
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
        table.add_row(escape(d.capability), yes_no(d), escape(d.reason), escape(because))
    out.print(table)
    return EXIT_OK


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
        who = asked_by(e)
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
            who,
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
        who = asked_by(e)
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
            escape(who),
        )
    out.print(table)
    return EXIT_OK


def _event_line(e: dict[str, Any]) -> str:
    who = asked_by(e)
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
        f"{yes_no(d)} — {escape(x['reason'])}."
    )
    say(escape(f"This holds in effective time {since}, {until}{known}."))
    for link in x["because"]:
        for line in _link_lines(link):
            say(escape(line))
    if not x["because"]:
        say("  no event decided it (nothing on file says otherwise)")
    if not x["check_agrees"]:
        say("[red]warning:[/] the domain fold disagrees with the check index here")
    say(f"  [dim]log position {x['position']}[/]")
    return EXIT_OK


def _link_lines(link: dict[str, Any]) -> list[str]:
    """One deciding event of `explain`: the event, and for one a region rule caused, the
    rule and the event that switched it on, then what made it necessary (unescaped)."""
    lines = ["  because " + _event_line(link)]
    rule = link.get("rule")
    if not rule:
        return lines
    text = f"    caused by rule {rule['rule']} in {rule['region']}"
    if rule.get("event"):
        text += ", switched on by " + _event_line(rule["event"])
    lines.append(text)
    trig = rule.get("trigger")
    if isinstance(trig, dict) and "stream" in trig:
        made = _event_line(trig) if "effective_at" in trig else f"{trig['type']} v{trig['version']}"
        lines.append("    made necessary by " + made)
    return lines


def _explain_picture(engine: Engine, x: dict[str, Any], path: str) -> str:
    """Draw the bitemporal picture of an explained decision into `path`, whole or not at
    all, and say where on stderr; a path that cannot be written is one line naming --png."""
    from entitlements.cli import pictures  # matplotlib loads only when a picture is asked for

    try:
        target = pictures.writable_target(path)  # before drawing: a bad path fails fast
        rectangles = audit.bitemporal(engine, x["account_id"], x["capability"])
        pictures.save_png(pictures.bitemporal_figure(rectangles, x), target)
    except OSError as e:
        raise ValueError(f"--png: cannot write {path!r}: {e.strerror or e}") from None
    err.print(f"picture written to {escape(path)}", soft_wrap=True)
    return path


def _time_options(p: argparse.ArgumentParser) -> None:
    """--at, --as-known-at and --json: the question's two clocks, as check, capabilities
    and explain all ask it."""
    p.add_argument("--at", metavar="T", help="effective time to ask about (default: now)")
    as_known_at_option(p)
    json_option(p)


def _min_position_option(p: argparse.ArgumentParser) -> None:
    """--min-position: check and capabilities answer from the index, which may lag behind
    a write the caller has just made."""
    p.add_argument(
        "--min-position",
        type=int,
        metavar="N",
        help="answer only from an index that reached log position N (read your writes: "
        "`apply` prints the position reached); waits up to 2 s, else exit 5",
    )


#: How check and explain exit, whatever they answer.
_EXITS = (
    "Exit 0 whatever the answer; 3 for an account never recorded; 2 for a bad capability or time."
)


def _about_account(
    sub: Subparsers, name: str, *, capability: bool = False, **declared: Any
) -> argparse.ArgumentParser:
    """A question about one ACCOUNT (and, for check and explain, one CAPABILITY): its
    parser with those arguments, so that the four commands take and show them alike."""
    p: argparse.ArgumentParser = sub.add_parser(name, **declared)
    p.add_argument("account")
    if capability:
        p.add_argument("capability", metavar="capability", help=" | ".join(CAPABILITIES))
    return p


def _add_check(sub: Subparsers) -> None:
    """`check ACCOUNT CAPABILITY`."""
    p = _about_account(
        sub,
        "check",
        capability=True,
        help="may ACCOUNT do CAPABILITY?",
        description=f"Capabilities: {', '.join(CAPABILITIES)}. {_EXITS}",
        run=cmd_check,
    )
    _time_options(p)
    _min_position_option(p)


def _add_capabilities(sub: Subparsers) -> None:
    """`capabilities ACCOUNT`."""
    p = _about_account(
        sub, "capabilities", help="every capability of ACCOUNT at once", run=cmd_capabilities
    )
    _time_options(p)
    _min_position_option(p)


def _add_history(sub: Subparsers) -> None:
    """`history ACCOUNT`."""
    p = _about_account(
        sub,
        "history",
        help="the account's events, both clocks and causes, in log order",
        description="Every event of ACCOUNT in log order, with both clocks, causes and who "
        "asked. With --as-known-at K: only what was recorded by K, and the account's "
        "rejected commands recorded by K beside the events (a `kind` column / field: "
        "event or rejection), each with its log position.",
        epilog="examples:\n  entitlements history cn-ent-02\n"
        "  entitlements history cn-ent-02 --as-known-at 2020-10-20 --json",
        run=cmd_history,
    )
    p.add_argument(
        "--as-known-at", metavar="K", help="only what was recorded by K (adds the rejections)"
    )
    p.add_argument(
        "--rejections", action="store_true", help="show the rejected commands beside the events"
    )
    json_option(p)


def _add_explain(sub: Subparsers) -> None:
    """`explain ACCOUNT CAPABILITY`."""
    p = _about_account(
        sub,
        "explain",
        capability=True,
        help="why ACCOUNT may (not) do CAPABILITY, since and until when, and the events behind it",
        description="The decision `check` gives at (T, K); the effective interval around T "
        "over which it stays the same (as known at K); and the chain behind it: each "
        "deciding event (both clocks, who asked, command_id) and, for one a region rule "
        f"caused, the rule and the region event that switched it on. {_EXITS}",
        epilog="example:\n  entitlements explain cn-free-01 host --at 2020-05-19\n"
        "  cn-free-01 host at 2020-05-19T00:00:00Z: no — hosting revoked by "
        "free_hosting_suspended in CN ...\n"
        "  entitlements explain cn-ent-02 host --at 2020-10-01 --as-known-at 2020-10-20 --json\n"
        "  entitlements explain cn-ent-02 host --png cn-ent-02-host.png",
        run=cmd_explain,
    )
    _time_options(p)
    p.add_argument(
        "--png",
        metavar="FILE",
        help="also draw the bitemporal picture into FILE: effective time across, recorded "
        "time up, each rectangle coloured by the answer (--json: its path in `png`)",
    )


#: check, capabilities, history and explain, in the order `--help` lists them.
PARSERS: tuple[Declare, ...] = (_add_check, _add_capabilities, _add_history, _add_explain)
