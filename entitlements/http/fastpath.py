"""The meeting service's question at the server's own speed: `GET
/v1/accounts/{id}/can/{capability}` with no query, answered before FastAPI's routing.

FastAPI's routing, dependency injection and validation cost several times what the index
takes to decide (a check is under a microsecond; a FastAPI route adds about 60 us). The app
(app.py) hands every request here first: the plain "now" check is answered straight from the worker's token table and
index, with the same bytes the route gives (`schemas.decision_json`, kept by rendered.py). Anything else, and
every way the plain check can fail (no or unknown token, unknown account, bad capability,
no index yet), goes on to the FastAPI route, which answers it as documented: so there is
one definition of every error, and the OpenAPI still describes the route.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.types import Scope, Send

from entitlements.domain.decisions import Decision

if TYPE_CHECKING:
    from entitlements.http.worker import Worker

PREFIX = "/v1/accounts/"
_JSON = (b"content-type", b"application/json")


class FastChecks:
    """The plain check, answered before FastAPI's middleware and routing (see app.py)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def answered(self, scope: Scope, send: Send) -> bool:
        """Answer the request if it is a plain check that can be answered 200; else False,
        and the request goes on to FastAPI untouched."""
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["query_string"]
            or not scope["path"].startswith(PREFIX)
        ):
            return False
        parts = scope["path"][len(PREFIX) :].split("/")
        if len(parts) != 3 or parts[1] != "can":
            return False
        decision = self.decide(scope, parts[0], parts[2])
        if decision is None:
            return False
        await self.answer(send, decision)
        return True

    def decide(self, scope: Scope, account_id: str, capability: str) -> Decision | None:
        """The decision, or None for the route to answer (and explain) instead."""
        worker = self.worker
        engine = worker.engine
        if engine is None:
            return None
        secret = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                secret = value
                break
        if secret[:7].lower() != b"bearer ":
            return None
        if worker.tokens.authenticate(secret[7:].strip().decode("latin-1")) is None:
            return None
        started = time.perf_counter()
        try:
            decision = engine.index.check(account_id, capability)
        except (LookupError, ValueError):  # unknown account, bad capability: the route says
            return None
        worker.metrics.observe(capability, decision.allowed, time.perf_counter() - started)
        return decision

    async def answer(self, send: Send, decision: Decision) -> None:
        body = self.worker.rendered.json(decision)
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in self.worker.stale_headers().items()]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
