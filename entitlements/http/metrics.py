"""Prometheus metrics of the whole server, whichever worker answers the scrape.

Under `entitlements serve`, every worker writes its metrics to files in one folder
(prometheus-client's multiprocess mode: `serve` sets PROMETHEUS_MULTIPROC_DIR to a fresh
folder before the workers start) and a scrape sums them all: counters never seem to reset
as the load balancer moves from worker to worker. Gauges are per worker (`pid` label) or
the worst of the live ones; a dead worker's gauges are dropped at the next scrape, its
counts stay. Without that folder (one process, the tests), the app keeps a registry of its own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from entitlements.application.read_models import snapshots_refused
from entitlements.http.settings import MULTIPROCESS_DIR

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("starting", "following", "reconnecting")
_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


class Metrics:
    """This worker's metrics: checks by capability and outcome, check latency, the index's
    position and lag, and the follower's state and staleness."""

    def __init__(self) -> None:
        self.folder = os.environ.get(MULTIPROCESS_DIR) or None
        self.registry = CollectorRegistry()
        r = self.registry
        self.checks = Counter(
            "entitlements_checks", "Checks answered", ["capability", "outcome"], registry=r
        )
        self.latency = Histogram(
            "entitlements_check_seconds",
            "Time to decide a check request (one check, or a batch's every check)",
            buckets=(1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 0.1),
            registry=r,
        )
        self.position = _gauge(
            r, "entitlements_index_position", "Log position a worker's index reached", "liveall"
        )
        self.lag = _gauge(
            r,
            "entitlements_index_lag_events",
            "Events in the log not yet in a worker's index (the worst live worker)",
            "livemax",
        )
        self.stale = _gauge(
            r,
            "entitlements_stale_seconds",
            "Seconds since a worker last read the store while it cannot (0: following)",
            "livemax",
        )
        self.workers = _gauge(
            r, "entitlements_workers", "Live workers by state", "livesum", "state"
        )
        self.reconnects = Counter(
            "entitlements_follower_reconnects",
            "Times a worker's follower lost the store",
            registry=r,
        )
        self.refused = Counter(
            "entitlements_snapshots_refused",
            "Snapshot files (index, commands) a worker ignored and read the log instead: "
            "not on record in the store, not of this log, or not readable",
            ["kind"],
            registry=r,
        )
        # this process's refusals counted so far, by kind (those before this worker: not its)
        self._refused: dict[str, int] = snapshots_refused()
        self._outcomes: dict[tuple[str, bool], Counter] = {}  # bound once each

    def observe(self, capability: str, allowed: bool, seconds: float) -> None:
        """One check answered (on the hot path: a bound counter, found in a dict)."""
        self.count(capability, allowed)
        self.latency.observe(seconds)

    def count(self, capability: str, allowed: bool, n: int = 1) -> None:
        """`n` checks of `capability` answered `allowed`. In multiprocess mode every write
        is a write to the worker's file: a batch counts once per kind of answer."""
        counter = self._outcomes.get((capability, allowed))
        if counter is None:
            counter = self.checks.labels(capability, "allowed" if allowed else "denied")
            self._outcomes[(capability, allowed)] = counter
        counter.inc(n)

    def worker_state(self, state: str, position: int, lag: int | None, stale: float) -> None:
        """This worker's gauges (set every half second by the worker's housekeeping)."""
        for s in STATES:
            self.workers.labels(s).set(1 if s == state else 0)
        self.count_refused()
        self.position.set(position)
        if lag is not None:
            self.lag.set(lag)
        self.stale.set(stale)

    def count_refused(self) -> None:
        """Bring the refused snapshots' counter level with this process's refusals (they
        happen where files are loaded, which knows nothing of metrics)."""
        for kind, n in snapshots_refused().items():
            new = n - self._refused.get(kind, 0)
            if new > 0:
                self.refused.labels(kind).inc(new)
                self._refused[kind] = n

    def exposition(self) -> bytes:
        """The Prometheus text of the whole server (every worker's files), or this app's."""
        self.count_refused()
        if self.folder is None:
            return generate_latest(self.registry)
        _forget_dead_workers(Path(self.folder))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.folder)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def _gauge(
    registry: CollectorRegistry,
    name: str,
    documentation: str,
    mode: Literal["liveall", "livemax", "livesum"],
    *labels: str,
) -> Gauge:
    """A gauge of `registry`; `mode` says what a scrape of every worker's files shows of it:
    each live worker's (`pid` label), the worst, or their sum."""
    return Gauge(name, documentation, labels, registry=registry, multiprocess_mode=mode)


def _forget_dead_workers(folder: Path) -> None:
    """Drop the live gauges of workers that are gone (uvicorn restarted them, or they
    ended): what the library's `mark_process_dead` is for, done at scrape time since the
    server has no hook for a worker's exit."""
    for path in folder.glob("gauge_live*.db"):
        found = _LIVE_FILE.fullmatch(path.name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, someone else's
            pass
