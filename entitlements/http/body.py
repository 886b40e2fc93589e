"""Request bodies: read through the command file's own JSON parser, so a key given twice
is refused (422 naming the key) over HTTP exactly as in a file, instead of the last one
silently winning. The size limit is FastAPI's own (`max_body_size`: counted as the body
arrives, chunked or not; past it, 413 and nothing more is read)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from entitlements.domain.commands import MalformedCommand, load_json
from entitlements.http.errors import Refused


class JsonBodyRequest(Request):
    """A request whose `json()` is our parser's: duplicate keys, bad UTF-8 and bad JSON are
    a 422 naming what is wrong (FastAPI's own parse would answer 400 or take the last key)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = load_json(1, await self.body(), label="body")
            except MalformedCommand as e:
                raise Refused(422, f"body: {e.message}", field=e.field) from None
        return self._json


class JsonBodyRoute(APIRoute):
    """Every route of the app: its body parsed by JsonBodyRequest (FastAPI's documented way
    to change how a request is read: a custom APIRoute with a custom Request class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            kind = request.headers.get("content-type")
            if kind is not None and request.method == "POST" and not _is_json(kind):
                raise Refused(
                    415,
                    "the body is JSON: send Content-Type: application/json",
                    field="Content-Type",
                )
            return await handler(JsonBodyRequest(request.scope, request.receive))

        return route


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )
