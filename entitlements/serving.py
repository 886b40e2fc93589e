"""How `entitlements serve` runs the app: uvicorn, with TCP_NODELAY on every connection.

uvicorn's multi-worker path binds its listening socket without naming the protocol, so
asyncio never turns Nagle's algorithm off on the connections it accepts, and a response
written in two pieces waits for the client's delayed acknowledgement: about 40 ms a
response (uvicorn issue #3149). The protocol below turns it off as each connection opens.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with Nagle's algorithm off on TCP connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
