"""`entitlements serve`: the HTTP API on a port, and the checks of its options."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from rich.markup import escape

from entitlements.adapters.store import StoreUnavailable, check_store, lasting_store_url
from entitlements.application.engine import Engine
from entitlements.cli.exits import EXIT_OK
from entitlements.cli.output import err
from entitlements.cli.parsers import Subparsers
from entitlements.http.settings import HEADER_TIMEOUT, MAX_STALENESS

T = TypeVar("T", int, float)


def cmd_serve(_: Engine | None, args: argparse.Namespace) -> int:
    """Serve the HTTP API (entitlements/http/server.py: granian, worker processes); every worker
    opens its own engine (own index, warm-started from the snapshot, following the log).
    SIGTERM lets requests in flight finish."""
    from entitlements.http import server as serving

    url = lasting_store_url(args.db, "each of serve's workers is a process of its own")
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


def positive_int(text: str) -> int:
    """An option's whole number of 1 or more (argparse names the option on error)."""
    value = _number(text, int, "a whole number")
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
    value = _number(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 and finite, not {text}")
    return value


def _number(text: str, kind: Callable[[str], T], what: str) -> T:
    """`text` read as `kind`, or argparse's one-line error saying what it is not."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def add_parser(sub: Subparsers) -> None:
    """`serve`: it opens no engine of its own, each worker does."""
    p = sub.add_parser(
        "serve",
        help="serve the HTTP API (checks, commands, audits) on a port",
        description="Serves the HTTP API of INTERFACES.md: checks for the meeting service, "
        "history and rejections for auditors, commands for admins, /healthz, /metrics and "
        "/openapi.json. Every request but /healthz and /metrics needs a bearer token "
        "(`entitlements token create`). Each worker holds its own index and follows the log.",
        run=cmd_serve,
        no_engine=True,
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
