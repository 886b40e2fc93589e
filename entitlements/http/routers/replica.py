"""What a client that keeps its own copy of the check index reads (issue 19): the snapshot
to start from and the log's records after it, and the change feed, pushed as Server-Sent
Events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse

from entitlements.http.body import JsonBodyRoute
from entitlements.http.dependencies import Checker
from entitlements.http.errors import Refused, errors
from entitlements.http.stream import RecordHub, SnapshotCache, change_stream, last_event_id

router = APIRouter(tags=["replica"], route_class=JsonBodyRoute)

#: What a stream is sent with: no proxy buffers or caches it.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get(
    "/v1/snapshot",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **errors(401, 403, 503)},
)
async def snapshot(
    request: Request,
    _: Checker,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The check index's snapshot at this worker's position (what `entitlements snapshot
    export` writes: a JSON header, arrays of numbers). `ETag` is the position;
    `X-Chain-Head` the integrity chain's hash there, which the stream's first record links
    to; `X-Snapshot-SHA256` the body's SHA-256. 304 when `If-None-Match` is that position."""
    cache: SnapshotCache = request.app.state.snapshots
    body, made = await cache.get()
    headers = {
        "ETag": f'"{made.position}"',
        "X-Position": str(made.position),
        "X-Chain-Head": made.chain_head,
        "X-Snapshot-SHA256": made.digest,
    }
    if if_none_match is not None and if_none_match.strip('W/" ') == str(made.position):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/octet-stream", headers=headers)


def stream_start(
    _: Checker,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> int:
    """The position a stream starts after: `Last-Event-ID` when a client resumes, else
    `after`; 422 when the header is not a position (only once the token let the request
    in: a stranger learns nothing of the stream)."""
    try:
        return last_event_id(last_event, after)
    except ValueError as e:
        raise Refused(422, str(e)) from None


#: The position a stream starts after, of a request a checker's token let in.
Start = Annotated[int, Depends(stream_start)]
#: What a stream's route answers: the stream, or an error before it starts.
STREAM_RESPONSES = {200: {"content": {"text/event-stream": {}}}, **errors(401, 403, 422, 503)}


@router.get("/v1/stream", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def stream(request: Request, start: Start, _: Checker) -> StreamingResponse:
    """Server-Sent Events: every log record after position `after` (or `Last-Event-ID`),
    in order, one `record` event each: `id:` its position, `data:` {position, stream,
    version, topic, state}, the state as stored with its chain link (`state.chain`), so a
    copy checks each record before applying it. A comment line every 15 s when idle."""
    hub: RecordHub = request.app.state.records
    hub.worker.ready_engine()  # 503 before the stream starts while there is no index
    return StreamingResponse(
        hub.stream(start), media_type="text/event-stream", headers=STREAM_HEADERS
    )


@router.get("/v1/changes/stream", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def changes_stream(request: Request, start: Start, _: Checker) -> StreamingResponse:
    """Server-Sent Events of the same items as /v1/changes after `after` (or
    `Last-Event-ID`), pushed as they are recorded: one `change` event each, the last item
    of a log position carrying `id:` that position. A comment line every 15 s when idle."""
    hub: RecordHub = request.app.state.records
    hub.worker.ready_engine()
    items = change_stream(hub.worker, start, hub.heartbeat, hub.lifetime)
    return StreamingResponse(items, media_type="text/event-stream", headers=STREAM_HEADERS)
