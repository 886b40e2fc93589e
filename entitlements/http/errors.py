"""Statuses and their one-line bodies: domain errors become 4xx/503 naming the field, never
a 500 for bad input, and every error status is declared in the OpenAPI with its body."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from eventsourcing.persistence import PersistenceError
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from entitlements.adapters.damaged import DamagedRecord
from entitlements.adapters.store import StoreError, StoreUnavailable
from entitlements.domain.commands import MalformedCommand
from entitlements.domain.decisions import PositionNotReached, UnknownAccount
from entitlements.domain.rules import UnknownCapability
from entitlements.http.schemas import ErrorOut

_WHY = {
    401: "No or unknown bearer token",
    403: "The token's role is too low",
    404: "Unknown account",
    409: "`min_position` not reached in time (`position`: the current one)",
    413: "Body too large",
    415: "A body that is not `application/json`",
    422: "A bad capability, time, parameter or body (`field` named)",
    503: "The store is unavailable, or this worker has no index yet",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route may answer, declared in the OpenAPI (422 replaces FastAPI's
    default validation-error shape, which is not ours)."""
    return {code: {"model": ErrorOut, "description": _WHY[code]} for code in codes}


class Refused(HTTPException):
    """A request refused with a status and what it is about (`field`, `position`)."""

    def __init__(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **about: Any
    ) -> None:
        super().__init__(status, detail, headers)
        self.about = {k: v for k, v in about.items() if v is not None}


def one_line(e: BaseException) -> str:
    """An error in one line: the driver's own words for a database error."""
    e = getattr(e, "orig", None) or e
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


Handler = Callable[[Request, Exception], Coroutine[Any, Any, JSONResponse]]


def _status(code: int, about: Callable[[Any], dict[str, Any]] | None = None) -> Handler:
    async def handler(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"detail": one_line(e), **(about(e) if about else {})}, code)

    return handler


async def _refused(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, HTTPException)
    return JSONResponse(
        {"detail": str(e.detail), **getattr(e, "about", {})}, e.status_code, e.headers
    )


async def _bad_value(_: Request, e: Exception) -> JSONResponse:  # a bad time, named by field
    field = str(e).split(":", 1)[0] if ":" in str(e) else None
    return JSONResponse({"detail": one_line(e), "field": field}, 422)


async def _bad_request(_: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    first = e.errors()[0] if e.errors() else {}
    field = ".".join(
        str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")
    )
    return JSONResponse(
        {"detail": f"{field or 'request'}: {first.get('msg', 'invalid')}", "field": field or None},
        422,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Domain errors as statuses with one-line details; never a 500 for bad input."""
    app.add_exception_handler(HTTPException, _refused)
    app.add_exception_handler(UnknownAccount, _status(404))
    app.add_exception_handler(PositionNotReached, _status(409, lambda e: {"position": e.current}))
    app.add_exception_handler(
        MalformedCommand, _status(422, lambda e: {"item": e.item, "field": e.field})
    )
    app.add_exception_handler(UnknownCapability, _status(422, lambda e: {"field": "capability"}))
    app.add_exception_handler(StoreUnavailable, _status(503))
    app.add_exception_handler(StoreError, _status(503))
    # The store failing under us (a command, an audit): one line, the driver's own.
    app.add_exception_handler(PersistenceError, _status(503))
    app.add_exception_handler(SQLAlchemyError, _status(503))
    # A row rewritten behind the engine's back (not the caller's input, not an outage).
    app.add_exception_handler(DamagedRecord, _status(500, lambda e: {"position": e.position}))
    app.add_exception_handler(ValueError, _bad_value)
    app.add_exception_handler(RequestValidationError, _bad_request)
