"""How `entitlements serve` runs the HTTP door: granian, with worker processes.

Why granian (benchmarks/http_figures.py measures it against uvicorn in the same run): its
HTTP/1 parsing and connection handling are Rust, so more of each request's time is ours;
it respawns a worker that dies; and it times out a client that is slow to send a
request's headers, or that keeps a connection idle (one timer for both: hyper's header
read timeout), which uvicorn does not do at all.

The parent process checks the address first (a busy port is a one-line error, exit 2,
before any worker starts), gives the workers one folder for their Prometheus metrics, and
removes that folder when the server stops. It imports nothing of the app: granian forks
the workers from it, and each loads the app (and prometheus_client) after the fork.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile

from entitlements.adapters.store import ENV_VAR
from entitlements.http.settings import (
    HEADER_TIMEOUT,
    MAX_STALENESS_VAR,
    MULTIPROCESS_DIR,
)

TARGET = "entitlements.http.app:app_from_env"  # loaded by each worker, after the fork


class AddressInUse(OSError):
    """The address `serve` was asked to listen on cannot be bound (in use, not ours)."""


def check_address(host: str, port: int) -> None:
    """Bind the address once, as the server will: its error now, in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise AddressInUse(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


#: The event loop of each worker: asyncio's own, not uvloop (granian's "auto" takes uvloop
#: where it is installed). A worker runs its loop twice, for the lifespan's startup and then
#: to serve, and uvloop drops a signal that arrives between two runs: a SIGTERM there (a
#: worker just started when `serve` is stopped) would be lost, and the worker would serve on
#: until the kill timeout, 30 s (tests/integration/test_serve_loop.py). That window is
#: narrow; the wide one, a worker loading the app, is `_stop_as_any_process`'s.
LOOP = "asyncio"


def _stop_as_any_process() -> None:
    """In a worker just forked: SIGTERM and SIGINT end it, until granian sets its own
    handlers (once the worker has loaded the app). A forked worker has the main process's
    handlers, which do nothing in a worker: a SIGTERM while it loaded the app (about 0.5 s)
    was lost, and the worker served on until the kill timeout, 30 s."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, signal.SIG_DFL)


def run(
    url: str,
    *,
    host: str,
    port: int,
    workers: int,
    max_staleness: float,
    header_timeout: float = HEADER_TIMEOUT,
    log_level: str = "warning",
) -> None:
    """Serve the store at `url` until SIGTERM or SIGINT (in-flight requests finish)."""
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    check_address(host, port)
    own_folder = MULTIPROCESS_DIR not in os.environ
    folder = os.environ.get(MULTIPROCESS_DIR) or tempfile.mkdtemp(prefix="entitlements-metrics-")
    os.environ.update(
        {ENV_VAR: url, MAX_STALENESS_VAR: str(max_staleness), MULTIPROCESS_DIR: folder}
    )
    os.register_at_fork(after_in_child=_stop_as_any_process)
    try:
        Granian(
            TARGET,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            factory=True,
            workers=workers,
            http1_settings=HTTP1Settings(header_read_timeout=round(header_timeout * 1000)),
            respawn_failed_workers=True,
            loop=Loops(LOOP),
            workers_kill_timeout=30,
            log_level=log_level,  # type: ignore[arg-type]
        ).serve()
    finally:
        if own_folder:
            shutil.rmtree(folder, ignore_errors=True)
