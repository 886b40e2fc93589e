"""`serve` stopped while its workers are still starting stops at once, not after granian's
30 s kill timeout. granian forks each worker with the main process's signal handlers, and
sets the worker's own only once the app is loaded: a SIGTERM to a worker loading the app
was taken by the main process's handler in the worker (which does nothing there), and the
worker went on to serve until it was killed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.e2e.servers import free_port, worker_pids

pytestmark = [pytest.mark.slow, pytest.mark.timing]


@pytest.mark.parametrize("after", [0.3, 0.6, 0.9, 1.2])
def test_serve_stopped_while_its_workers_start_stops_within_ten_seconds(
    tmp_path: Path, after: float
) -> None:
    env = {**os.environ, "ENTITLEMENTS_DB": f"sqlite:///{tmp_path / 'store.db'}"}
    command = [CLI, "serve", "--port", str(free_port()), "--workers", "2"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(after)  # the workers are forked, loading the app, or starting it
    stopped = time.monotonic()
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        alive = worker_pids(server)
        for pid in [*alive, server.pid]:  # none left running on the machine
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, said = server.communicate()
        pytest.fail(
            f"serve still running 10 s after SIGTERM ({after} s after its start), "
            f"with {len(alive)} worker(s) alive; it said:\n{said.decode()[-2000:]}"
        )
    assert time.monotonic() - stopped < 10
