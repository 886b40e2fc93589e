"""The do-nothing floor of the HTTP figures (benchmarks/http_figures.py): a raw ASGI app, no
framework, that answers every request 200 with the same decision-sized JSON body.

Served by the same server, the same way, under the same load as `entitlements serve`, it is
what the server and the client cost by themselves: the check route's requests/s are worth
reading only as a fraction of this app's.

    granian --interface asgi --workers 2 benchmarks.floor_app:app
    uvicorn --workers 2 benchmarks.floor_app:app
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# What GET /v1/accounts/{id}/can/host answers on a store built by `apply` (433 bytes).
DECISION = {
    "account_id": "acct-0000001",
    "capability": "host",
    "allowed": True,
    "value": None,
    "reason": "may host on the pro plan",
    "because": [
        {
            "stream": "account:acct-0000001",
            "type": "AccountRegistered",
            "version": 1,
            "effective_at": "2020-01-01T00:00:00Z",
            "recorded_at": "2026-12-04T17:10:08.674118Z",
            "cause": None,
            "region": "US",
            "plan": "pro",
            "channel": "online",
            "command_id": "api:689980db023644f6b24047448e2f5cfc",
        }
    ],
    "position": 2,
    "at": None,
    "as_known_at": None,
}
BODY = json.dumps(DECISION, separators=(",", ":")).encode()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The fixed answer to any HTTP request (the body, if any, is left unread); lifespan
    events acknowledged, so servers that run the lifespan protocol start it."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send(START)
        await send(RESPONSE)


def factory() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app, for a server started as `entitlements serve` starts it (factory=True)."""
    return app
