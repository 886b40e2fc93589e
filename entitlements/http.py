"""The HTTP door (`entitlements serve`): the meeting service's checks, the auditors' reads and
the admins' commands, over FastAPI.

Every worker process holds its own engine: its own in-memory check index, warm-started from
the snapshot and kept level with the log (LISTEN/NOTIFY on PostgreSQL, polling on SQLite).
A check never reads the store; a token check reads one row (so a revocation is seen by every
worker at once). Decisions are the same JSON as `entitlements check --json`.

Statuses: 400 a body that is not even JSON, 401 no or unknown token, 403 role too low, 404
unknown account, 409 `min_position` not reached in time (with the current position), 413 body
too large, 422 a bad capability, time or body (the field named), 503 the store is unavailable.
Never a 500 for bad input. Each is declared in the OpenAPI, with its `ErrorOut` body.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

from eventsourcing.persistence import PersistenceError
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from entitlements import audit
from entitlements.commands import MalformedCommand
from entitlements.decisions import Decision, PositionNotReached, UnknownAccount
from entitlements.engine import Engine
from entitlements.rules import UnknownCapability
from entitlements.store import StoreError, StoreUnavailable
from entitlements.tokens import Principal, TokenStore

MAX_BODY = 1 << 20  # bytes: a larger request body is refused with 413
MAX_BATCH = 1000  # checks or commands in one request
MAX_WAIT = 30.0  # seconds a /v1/changes request may wait for something new


# -- payloads -------------------------------------------------------------------------------


class DecisionOut(BaseModel):
    """One decision: the same fields as `entitlements check --json`."""

    account_id: str
    capability: str
    allowed: bool
    value: int | None
    reason: str
    because: list[dict[str, Any]]
    position: int
    at: str | None = None
    as_known_at: str | None = None


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(min_length=1, max_length=64)
    capability: str = Field(min_length=1, max_length=64)
    at: str | None = Field(default=None, max_length=64)
    as_known_at: str | None = Field(default=None, max_length=64)


class ChecksIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checks: list[CheckIn] = Field(max_length=MAX_BATCH)
    min_position: int | None = Field(default=None, ge=0)


class CheckError(BaseModel):
    """An item of a batch that could not be decided (an unknown account, a bad time)."""

    account_id: str
    capability: str
    error: str
    status: int


class ChecksOut(BaseModel):
    results: list[DecisionOut | CheckError]
    position: int


class CapabilitiesOut(BaseModel):
    account_id: str
    at: str | None
    as_known_at: str | None
    capabilities: list[DecisionOut]


class HoldsOut(BaseModel):
    since: str | None
    until: str | None


class ExplainOut(BaseModel):
    """`entitlements explain --json`: the decision, how long it holds, and why."""

    account_id: str
    capability: str
    region: str
    at: str
    as_known_at: str | None
    allowed: bool
    value: int | None
    reason: str
    holds: HoldsOut
    because: list[dict[str, Any]]
    position: int
    check_agrees: bool


class CommandResultOut(BaseModel):
    item: int
    command_id: str | None
    command: str
    status: str
    reason: str | None
    position: int | None
    duplicate: bool = False


class CommandsOut(BaseModel):
    results: list[CommandResultOut]
    position: int


class Health(BaseModel):
    status: str
    position: int


class ErrorOut(BaseModel):
    """Every 4xx and 503: a one-line `detail`, and what it is about when known (the field,
    the command's item, the index's position)."""

    detail: str
    field: str | None = None
    item: int | None = None
    position: int | None = None


_WHY = {
    400: "A body that cannot be parsed (not UTF-8 JSON)",
    401: "No or unknown bearer token",
    403: "The token's role is too low",
    404: "Unknown account",
    409: "`min_position` not reached in time (`position`: the current one)",
    413: "Body too large",
    422: "A bad capability, time, parameter or body (`field` named)",
    503: "The store is unavailable",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route may answer, declared in the OpenAPI (422 replaces FastAPI's
    default validation-error shape, which is not ours)."""
    return {code: {"model": ErrorOut, "description": _WHY[code]} for code in codes}


# -- who asks: the worker's engine and the caller's token --------------------------------------


def engine_of(request: Request) -> Engine:
    return request.app.state.engine  # type: ignore[no-any-return]


def principal(role: str) -> Callable[..., Principal]:
    """A dependency that lets a request in only with a bearer token of `role` or above."""

    def require(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Principal:
        scheme, _, secret = (authorization or "").partition(" ")
        who = (
            request.app.state.tokens.authenticate(secret.strip())
            if scheme.lower() == "bearer"
            else None
        )
        if who is None:
            raise HTTPException(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not who.may(role):
            raise HTTPException(403, f"this needs the {role} role; the token is {who.role}")
        return who  # type: ignore[no-any-return]

    return require


checker, auditor, admin = principal("checker"), principal("auditor"), principal("admin")


# -- the app --------------------------------------------------------------------------------


def create_app(url: str | None = None, *, follow: bool = True) -> FastAPI:
    """The app for one worker process, on the store at `url` (default: $ENTITLEMENTS_DB)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(url, must_exist=False)
        app.state.engine, app.state.tokens = engine, TokenStore(engine.url)
        if follow:
            engine.follow()
        app.state.ready = True
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(
        title="entitlements",
        version="1",
        summary="What may this account do at time T, as we knew it at time K?",
        lifespan=lifespan,
    )
    app.state.ready = False
    metrics = _Metrics()
    _install_error_handlers(app)
    _install_body_limit(app)

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["operations"],
        responses={503: {"model": Health, "description": "Not ready yet"}},
    )
    def healthz(request: Request) -> JSONResponse:
        """Liveness and readiness: 503 until this worker's index has caught up with the log."""
        ready = getattr(request.app.state, "ready", False)
        position = request.app.state.engine.index.position if ready else 0
        return JSONResponse(
            {"status": "ready" if ready else "starting", "position": position},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics", response_class=PlainTextResponse, tags=["operations"], responses=_errors(503)
    )
    def prometheus(request: Request) -> PlainTextResponse:
        """Prometheus text: checks by capability and outcome, latency, index position and lag."""
        engine = request.app.state.engine
        metrics.position.set(engine.index.position)
        metrics.lag.set(max(0, engine.position() - engine.index.position))
        return PlainTextResponse(
            generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4"
        )

    @app.get("/v1/ping", tags=["operations"], responses=_errors(401, 403, 503))
    def ping(_: Annotated[Principal, Depends(checker)]) -> dict[str, bool]:
        """A token check and nothing else: the baseline a check is measured against."""
        return {"ok": True}

    @app.get(
        "/v1/accounts/{account_id}/can/{capability}",
        response_model=DecisionOut,
        tags=["checks"],
        responses=_errors(401, 403, 404, 409, 422, 503),
    )
    def can(
        account_id: str,
        capability: str,
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(checker)],
        at: Annotated[str | None, Query(max_length=64)] = None,
        as_known_at: Annotated[str | None, Query(max_length=64)] = None,
        min_position: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        """One decision, from this worker's index (never the store)."""
        started = time.perf_counter()
        d = engine.check(account_id, capability, at, as_known_at, min_position)
        metrics.observe(d, time.perf_counter() - started)
        return _decision(d, at, as_known_at)

    @app.post(
        "/v1/checks",
        response_model=ChecksOut,
        tags=["checks"],
        responses=_errors(400, 401, 403, 409, 413, 422, 503),
    )
    def checks(
        body: ChecksIn,
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(checker)],
    ) -> dict[str, Any]:
        """Many decisions in one call, in order; an item that cannot be decided (an unknown
        account, a bad capability or time) is an error item in its place."""
        if body.min_position is not None:
            engine.wait_for(body.min_position)
        results: list[dict[str, Any]] = []
        for c in body.checks:
            try:
                started = time.perf_counter()
                d = engine.check(c.account_id, c.capability, c.at, c.as_known_at)
                metrics.observe(d, time.perf_counter() - started)
                results.append(_decision(d, c.at, c.as_known_at))
            except UnknownAccount as e:
                results.append(
                    {
                        "account_id": c.account_id,
                        "capability": c.capability,
                        "error": str(e),
                        "status": 404,
                    }
                )
            except ValueError as e:
                results.append(
                    {
                        "account_id": c.account_id,
                        "capability": c.capability,
                        "error": str(e),
                        "status": 422,
                    }
                )
        return {"results": results, "position": engine.index.position}

    @app.get(
        "/v1/accounts/{account_id}/capabilities",
        response_model=CapabilitiesOut,
        tags=["checks"],
        responses=_errors(401, 403, 404, 409, 422, 503),
    )
    def capabilities(
        account_id: str,
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(checker)],
        at: Annotated[str | None, Query(max_length=64)] = None,
        as_known_at: Annotated[str | None, Query(max_length=64)] = None,
        min_position: Annotated[int | None, Query(ge=0)] = None,
    ) -> dict[str, Any]:
        """Every capability of the account at once."""
        decisions = engine.capabilities(account_id, at, as_known_at, min_position)
        return {
            "account_id": account_id,
            "at": at,
            "as_known_at": as_known_at,
            "capabilities": [_decision(d, at, as_known_at) for d in decisions],
        }

    @app.get("/v1/changes", tags=["checks"], responses=_errors(401, 403, 422, 503))
    def changes(
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(checker)],
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 100,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
    ) -> dict[str, Any]:
        """Capability changes recorded after log position `after`, in log order: account,
        capability, old and new answer, both clocks, position, cause. A region-wide change
        of a rule that is not fanned out (online subscriptions closed) is one item naming
        the region. With nothing new, waits up to `wait` seconds. Ask again from `next`."""
        items, next_position = engine.changes(after, limit, wait)
        return {"changes": items, "next": next_position}

    @app.get(
        "/v1/accounts/{account_id}/history",
        tags=["auditors"],
        responses=_errors(401, 403, 404, 422, 503),
    )
    def history(
        account_id: str,
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(auditor)],
        as_known_at: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """The account's events in log order, with both clocks, causes and who asked. With
        `as_known_at`: only the events recorded by then (each with its log `position`), and
        `entries`: those events and the account's rejected commands recorded by then, in
        log order, `kind` saying which is which."""
        if as_known_at is None:
            return {"account_id": account_id, "events": engine.history(account_id)}
        entries = audit.history(engine, account_id, as_known_at, rejections=True)
        return {
            "account_id": account_id,
            "as_known_at": as_known_at,
            "events": [e for e in entries if e["kind"] == "event"],
            "rejections": [e for e in entries if e["kind"] == "rejection"],
            "entries": entries,
        }

    @app.get(
        "/v1/accounts/{account_id}/explain/{capability}",
        response_model=ExplainOut,
        tags=["auditors"],
        responses=_errors(401, 403, 404, 422, 503),
    )
    def explain(
        account_id: str,
        capability: str,
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(auditor)],
        at: Annotated[str | None, Query(max_length=64)] = None,
        as_known_at: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        """The decision `can` gives at (at, as_known_at), the effective interval around `at`
        over which it holds (`holds.since`, `holds.until`; null for an open end), and the
        chain behind it: each deciding event with both clocks, actor and command_id, and
        for a rule-caused one the rule and the region event that switched it."""
        return audit.explain(engine, account_id, capability, at, as_known_at)

    @app.get("/v1/rejections", tags=["auditors"], responses=_errors(401, 403, 422, 503))
    def rejections(
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(auditor)],
        account_id: Annotated[str | None, Query(max_length=64)] = None,
        region: Annotated[str | None, Query(max_length=2)] = None,
        after: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The rejection log, in log order: every rejected command after position `after`."""
        entries = [r for r in engine.rejections(account_id, region) if r["position"] > after]
        return {"rejections": entries}

    @app.get("/v1/audit/verify", tags=["auditors"], responses=_errors(401, 403, 422, 503))
    def verify(
        engine: Annotated[Engine, Depends(engine_of)],
        _: Annotated[Principal, Depends(auditor)],
        receipt: Annotated[str | None, Query(max_length=200)] = None,
    ) -> dict[str, Any]:
        """`entitlements audit verify --json`: the integrity chain recomputed over the whole
        log: `ok`, `head` (position, hash), or `break` (position, kind, reason); with
        `receipt=HASH@POSITION`, whether the log up to POSITION is unchanged since."""
        return audit.verify(engine, receipt)

    @app.post(
        "/v1/commands",
        response_model=CommandsOut,
        tags=["commands"],
        responses=_errors(400, 401, 403, 413, 422, 503),
    )
    def commands(
        body: dict[str, Any],
        engine: Annotated[Engine, Depends(engine_of)],
        who: Annotated[Principal, Depends(admin)],
        idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
    ) -> dict[str, Any]:
        """One command object, or {"commands": [...]}: validated whole first (a malformed
        item refuses the body, 422, nothing applied), then applied in order. `actor` is the
        token's name unless given; `Idempotency-Key` is the command_id of a single command,
        so a retried request applies nothing twice."""
        items = body.get("commands") if set(body) == {"commands"} else [body]
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            raise MalformedCommand(
                1, "commands", f"expected 1 to {MAX_BATCH} command objects", "item"
            )
        if idempotency_key is not None and len(items) != 1:
            raise MalformedCommand(
                1, "Idempotency-Key", "names one command: send one per request", "item"
            )
        prepared = [
            {
                "actor": who.name,
                **item,
                **({"command_id": idempotency_key} if idempotency_key else {}),
            }
            if isinstance(item, dict)
            else item
            for item in items
        ]
        results = engine.apply(prepared)
        return {
            "results": [r.as_dict("item") for r in results],
            "position": max((r.position or 0 for r in results), default=engine.index.position),
        }

    return app


def app_from_env() -> FastAPI:
    """What `entitlements serve` hands to uvicorn in every worker (store: $ENTITLEMENTS_DB)."""
    return create_app(os.environ.get("ENTITLEMENTS_DB"))


def _decision(d: Decision, at: str | None, as_known_at: str | None) -> dict[str, Any]:
    return {**d.as_dict(), "at": at, "as_known_at": as_known_at}


class _Metrics:
    """This worker's Prometheus metrics (a registry of its own: several apps in one process,
    as in tests, never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.checks = Counter(
            "entitlements_checks",
            "Checks answered",
            ["capability", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "entitlements_check_seconds",
            "Time to decide a check",
            buckets=(1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 0.1),
            registry=self.registry,
        )
        self.position = Gauge(
            "entitlements_index_position",
            "Log position this worker's index reached",
            registry=self.registry,
        )
        self.lag = Gauge(
            "entitlements_index_lag_events",
            "Events in the log not yet in this worker's index",
            registry=self.registry,
        )

    def observe(self, d: Decision, seconds: float) -> None:
        self.checks.labels(d.capability, "allowed" if d.allowed else "denied").inc()
        self.latency.observe(seconds)


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _install_error_handlers(app: FastAPI) -> None:
    """Domain errors as statuses with one-line details; never a 500 for bad input."""

    def status(
        code: int, extra: Callable[[Any], dict[str, Any]] | None = None
    ) -> Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]:
        async def handler(_: Request, e: Exception) -> JSONResponse:
            return JSONResponse(
                {"detail": _one_line(e), **(extra(e) if extra else {})}, status_code=code
            )

        return handler

    app.add_exception_handler(UnknownAccount, status(404))
    app.add_exception_handler(PositionNotReached, status(409, lambda e: {"position": e.current}))
    app.add_exception_handler(
        MalformedCommand, status(422, lambda e: {"item": e.item, "field": e.field})
    )
    app.add_exception_handler(UnknownCapability, status(422, lambda e: {"field": "capability"}))
    app.add_exception_handler(StoreUnavailable, status(503))
    app.add_exception_handler(StoreError, status(503))
    # The store failing under us (a token lookup, a command): one line, the driver's own.
    app.add_exception_handler(PersistenceError, status(503))

    @app.exception_handler(SQLAlchemyError)
    async def database_down(_: Request, e: SQLAlchemyError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(getattr(e, "orig", None) or e)}, status_code=503)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, e: ValueError) -> JSONResponse:  # a bad time, named by field
        field = str(e).split(":", 1)[0] if ":" in str(e) else None
        return JSONResponse({"detail": _one_line(e), "field": field}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        field = ".".join(
            str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")
        )
        return JSONResponse(
            {
                "detail": f"{field or 'request'}: {first.get('msg', 'invalid')}",
                "field": field or None,
            },
            status_code=422,
        )


def _install_body_limit(app: FastAPI) -> None:
    """A body over MAX_BODY bytes is refused before it is read whole (413)."""

    @app.middleware("http")
    async def limit(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"the body is over {MAX_BODY} bytes"}, status_code=413)
        return await call_next(request)
