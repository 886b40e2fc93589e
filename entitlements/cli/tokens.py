"""`entitlements token`: the HTTP API's bearer tokens (create, list, revoke)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from rich.markup import escape
from rich.table import Table

from entitlements.adapters.tokens import ROLES
from entitlements.application.access import open_tokens
from entitlements.application.engine import Engine
from entitlements.cli.exits import EXIT_MALFORMED, EXIT_OK
from entitlements.cli.output import err, out
from entitlements.cli.parsers import Subparsers, command_group, json_option

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
    with open_tokens(engine.url) as tokens:
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
    with open_tokens(engine.url) as tokens:
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
    with open_tokens(engine.url) as tokens:
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


def add_parser(sub: Subparsers) -> None:
    """`token` and its actions."""
    token_sub = command_group(
        sub,
        "token",
        help="API tokens for `entitlements serve`: create, list, revoke",
        description=TOKEN_HELP,
    )
    t = token_sub.add_parser(
        "create",
        help="a new token, printed once (the last word of the last line)",
        description="Creates a token for NAME with ROLE and prints it once, as the "
        "last word of the last line (--json: {name, role, token}). Only its hash is "
        "stored: keep it, it cannot be shown again. Creates the store if it does not "
        "exist yet. Exit 2 for a name already in use (even revoked) or a bad name.",
        run=cmd_token_create,
        lazy_index=True,
        store_must_exist=False,
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
    json_option(t)
    t = token_sub.add_parser(
        "list",
        help="every token: name, role, created, revoked (never a secret)",
        run=cmd_token_list,
        lazy_index=True,
    )
    json_option(t)
    t = token_sub.add_parser(
        "revoke",
        help="revoke NAME's token: refused at once, on every worker",
        description="Revokes the token named NAME: every worker and host refuses "
        "it from its next request (401). Revoking twice is fine (exit 0); an "
        "unknown name is exit 2. The name stays taken.",
        run=cmd_token_revoke,
        lazy_index=True,
    )
    t.add_argument("name", metavar="NAME")
