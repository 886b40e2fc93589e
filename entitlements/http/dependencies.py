"""Who asks, and of which worker: the dependencies every route declares; and the query
parameters several routes declare alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from entitlements.adapters.tokens import Principal
from entitlements.application.engine import Engine
from entitlements.http.errors import Refused
from entitlements.http.worker import Worker


def worker_of(request: Request) -> Worker:
    return request.app.state.worker  # type: ignore[no-any-return]


def engine_of(worker: Annotated[Worker, Depends(worker_of)]) -> Engine:
    """The worker's engine; 503 while it has none yet (the store was away at start)."""
    return worker.ready_engine()


def principal(role: str) -> Callable[..., Principal]:
    """A dependency that lets a request in only with a bearer token of `role` or above,
    looked up in the worker's token table (no store read)."""

    def require(
        worker: Annotated[Worker, Depends(worker_of)],
        authorization: Annotated[str | None, Header()] = None,
    ) -> Principal:
        scheme, _, secret = (authorization or "").partition(" ")
        who = worker.tokens.authenticate(secret.strip()) if scheme.lower() == "bearer" else None
        if who is None and worker.tokens.refreshed_at is None:
            raise Refused(503, f"the tokens could not be read yet: {worker.tokens.error}")
        if who is None:
            raise Refused(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not who.may(role):
            raise Refused(403, f"this needs the {role} role; the token is {who.role}")
        return who

    return require


checker, auditor, admin = principal("checker"), principal("auditor"), principal("admin")
Checker = Annotated[Principal, Depends(checker)]
Auditor = Annotated[Principal, Depends(auditor)]
Admin = Annotated[Principal, Depends(admin)]
EngineDep = Annotated[Engine, Depends(engine_of)]
WorkerDep = Annotated[Worker, Depends(worker_of)]

#: A time in the query (ISO 8601: the engine reads it, a bad one is a 422).
Time = Annotated[str | None, Query(max_length=64)]
