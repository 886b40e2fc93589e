"""The app of one worker process: its Worker (engine, tokens, metrics), the routers, the
error statuses, the body limit, and the plain check's fast path in front of them all."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from entitlements.adapters.store import ENV_VAR
from entitlements.http.errors import install_error_handlers
from entitlements.http.fastpath import FastChecks
from entitlements.http.routers import (
    auditors,
    changes,
    checks,
    commands,
    operations,
    replica,
    what_if,
    who_can,
)
from entitlements.http.schemas import MAX_BODY
from entitlements.http.settings import HEARTBEAT_VAR, MAX_STALENESS, MAX_STALENESS_VAR, POLL
from entitlements.http.stream import HEARTBEAT, RecordHub, SnapshotCache
from entitlements.http.worker import Worker


class EntitlementsAPI(FastAPI):
    """FastAPI, with the meeting service's plain check answered before FastAPI's own
    middleware and routing run (fastpath.py); every other request, as FastAPI does."""

    fast: FastChecks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.fast.answered(scope, send):
            await super().__call__(scope, receive, send)


def create_app(
    url: str | None = None,
    *,
    follow: bool = True,
    max_staleness: float = MAX_STALENESS,
    poll: float = POLL,
    heartbeat: float = HEARTBEAT,
) -> FastAPI:
    """The app for one worker process, on the store at `url` (default: $ENTITLEMENTS_DB).
    `follow=False` keeps the index where it is between requests (tests): a check of an
    account it does not know then reads the log first."""
    worker = Worker(url, follow=follow, max_staleness=max_staleness, poll=poll)
    snapshots = SnapshotCache(worker)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.watch.bind(asyncio.get_running_loop())
        await run_in_threadpool(worker.start)
        warm = asyncio.create_task(snapshots.warm())  # /healthz and checks do not wait
        try:
            yield
        finally:
            warm.cancel()  # an export under way ends in its thread before the store closes
            await run_in_threadpool(worker.close)

    app = EntitlementsAPI(
        title="entitlements",
        version="1",
        summary="What may this account do at time T, as we knew it at time K?",
        lifespan=lifespan,
        max_body_size=MAX_BODY,
        strict_content_type=False,  # no Content-Type at all is read as JSON (body.py)
    )
    app.state.worker = worker
    app.state.records = RecordHub(worker, heartbeat)
    app.state.snapshots = snapshots
    install_error_handlers(app)
    for group in (operations, checks, changes, auditors, commands, who_can, what_if, replica):
        app.include_router(group.router)
    app.fast = FastChecks(worker)
    return app


def app_from_env() -> FastAPI:
    """What `entitlements serve` hands the server in every worker (store: $ENTITLEMENTS_DB)."""
    staleness = float(os.environ.get(MAX_STALENESS_VAR, MAX_STALENESS))
    heartbeat = float(os.environ.get(HEARTBEAT_VAR, HEARTBEAT))
    return create_app(os.environ.get(ENV_VAR), max_staleness=staleness, heartbeat=heartbeat)
