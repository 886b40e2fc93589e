"""The HTTP door (`entitlements serve`): the meeting service's checks, the auditors' reads
and the admins' commands, over FastAPI.

Every worker process holds its own engine: its own in-memory check index, warm-started from
the snapshot and kept level with the log by a follower that reconnects by itself
(LISTEN/NOTIFY on PostgreSQL, polling on SQLite). A check never reads the store: tokens
come from the worker's own table (read again twice a second), decisions from its index.

Statuses: 401 no or unknown token, 403 role too low, 404 unknown account, 409
`min_position` not reached in time (with the current position), 413 body too large, 415 a
body that is not JSON, 422 a bad capability, time or body (the field named), 503 the store
is unavailable or the worker has no index yet. Never a 500 for bad input.

- app.py: the app and its wiring; worker.py: one worker's engine, tokens and freshness;
- fastpath.py: the plain check, answered before FastAPI's routing;
- routers/: the routes, one module per group; schemas.py: payloads; errors.py: statuses;
- body.py: bodies read by the command file's own parser; metrics.py: Prometheus, all workers;
- server.py: how `serve` runs it (granian); settings.py: what the server tells its workers.

This file imports nothing, so the server's parent process can read settings.py without
loading the app (see server.py).
"""
