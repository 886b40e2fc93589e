"""What the HTTP door takes and gives: pydantic payloads (the OpenAPI is made from them),
and the one place a Decision becomes response bytes."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from entitlements.domain.decisions import Decision

MAX_BODY = 1 << 20  # bytes: a larger request body is refused with 413, as it arrives
MAX_BATCH = 1000  # checks or commands in one request
MAX_WAIT = 30.0  # seconds a /v1/changes request may wait for something new


def dumps(content: Any) -> bytes:
    """JSON as every answer of ours is written (Starlette's JSONResponse writes the same)."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def decision_json(d: Decision, at: str | None = None, as_known_at: str | None = None) -> bytes:
    """A decision as the JSON of `entitlements check --json`, plus the times asked about:
    serialized once, never validated again on the way out."""
    return dumps(decision_dict(d, at, as_known_at))


def decision_dict(d: Decision, at: str | None, as_known_at: str | None) -> dict[str, Any]:
    """The same, as a dict."""
    return {**d.as_dict(), "at": at, "as_known_at": as_known_at}


def checks_json(results: list[bytes], position: int) -> bytes:
    """A batch's answer (ChecksOut) from its items' JSON, each made once (rendered.py)."""
    return b'{"results":[' + b",".join(results) + b'],"position":%d}' % position


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


class ChangesOut(BaseModel):
    """Capability changes after a position, and the position to ask from next."""

    changes: list[dict[str, Any]]
    next: int


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
    """A worker's readiness: `ready` (following the log), `degraded` (the store cannot be
    read: answers come from memory, as of `stale_since`), `starting` (no index yet)."""

    status: str
    position: int
    stale_since: str | None = None
    detail: str | None = None


class ErrorOut(BaseModel):
    """Every 4xx and 503: a one-line `detail`, and what it is about when known (the field,
    the command's item, the index's position)."""

    detail: str
    field: str | None = None
    item: int | None = None
    position: int | None = None
