"""The event loop `serve`'s workers run (entitlements.http.server.LOOP) keeps a signal that
arrives between two runs of the loop. granian runs a worker's loop once for the lifespan's
startup and again to serve; with uvloop, a SIGTERM in between is lost and the worker serves
on for the 30 s of the kill timeout. (The wider window of the same kind, a worker loading
the app, is tests/e2e/test_serve_stop.py's.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from entitlements.http.server import LOOP

BETWEEN_TWO_RUNS = """
import asyncio, os, signal, sys, time
if sys.argv[1] == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
told = asyncio.Event()
loop.add_signal_handler(signal.SIGTERM, told.set)
loop.run_until_complete(asyncio.sleep(0.01))  # the lifespan's startup
os.kill(os.getpid(), signal.SIGTERM)  # `serve` stopped now, between the two runs
time.sleep(0.1)
try:
    loop.run_until_complete(asyncio.wait_for(told.wait(), 2))  # serving
    print("told")
except TimeoutError:
    print("lost")
"""


def after_a_signal_between_two_runs(loop: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", BETWEEN_TWO_RUNS, loop],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def test_serve_runs_a_loop_that_keeps_a_signal_between_two_runs() -> None:
    assert after_a_signal_between_two_runs(LOOP) == "told"


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_uvloop_loses_it_which_is_why_serve_does_not_run_it() -> None:
    assert after_a_signal_between_two_runs("uvloop") == "lost"
