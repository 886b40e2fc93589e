"""The index snapshot: the log's facts as plain JSON, so a process starts without reading
the whole log.

It carries no code (no pickle: loading it can only ever build facts), names the schema of
the code that wrote it, and names the event at its position (id, version, topic and a hash
of the stored bytes), which the loader checks against the log. A file that fails any check,
or that is not what it claims, is ignored: the process reads the log instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from entitlements.rules import Fact
from projections.facts import LogFacts

FORMAT = "entitlements-index-snapshot"
SCHEMA = 4  # raise whenever Fact or LogFacts change shape: an older file is then ignored


class SnapshotRefused(ValueError):
    """The file is not a snapshot this code can trust; the caller reads the log instead."""


def fingerprint(notification: Any) -> dict[str, Any]:
    """What identifies the event at a position: a snapshot is of this log only if the event
    at its position is this very event, byte for byte."""
    return {
        "id": str(notification.originator_id),
        "version": notification.originator_version,
        "topic": notification.topic,
        "sha256": hashlib.sha256(bytes(notification.state)).hexdigest(),
    }


def write(path: Path, facts: LogFacts, head: dict[str, Any] | None, tmp_suffix: str) -> None:
    """Write the snapshot to a new file and move it into place (atomic)."""
    document = {
        "format": FORMAT,
        "schema": SCHEMA,
        "position": facts.position,
        "head": head,
        "newest_recorded_at": facts.newest_recorded_at and facts.newest_recorded_at.isoformat(),
        "accounts": {a: [_fact_row(f) for f in fs] for a, fs in facts.accounts.items()},
        "regions": {r: [_fact_row(f) for f in fs] for r, fs in facts.regions.items()},
        "members": facts.members,
        "streams": [[uuid_int, kind, name] for uuid_int, (kind, name) in facts.stream_of.items()],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(tmp_suffix)
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
        json.dump(document, f, separators=(",", ":"))
    tmp.replace(path)


def read(path: Path) -> tuple[LogFacts, dict[str, Any] | None]:
    """The facts in the file and the fingerprint of its head event; SnapshotRefused when the
    file is not a well-formed snapshot of this schema (checking it against the log is the
    caller's: it holds the log)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            document = json.load(f)
        if document.get("format") != FORMAT or document.get("schema") != SCHEMA:
            raise SnapshotRefused(f"not a schema-{SCHEMA} snapshot")
        return _facts(document), document["head"]
    except SnapshotRefused:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        RecursionError,
    ) as e:
        raise SnapshotRefused(f"unreadable snapshot: {type(e).__name__}") from None


def _fact_row(f: Fact) -> list[Any]:
    return [
        f.stream,
        f.type,
        f.version,
        f.effective_at.isoformat(),
        f.recorded_at.isoformat(),
        f.data,
        f.cause,
    ]


def _fact(row: list[Any]) -> Fact:
    stream, type_, version, effective_at, recorded_at, data, cause = row
    if not (
        isinstance(stream, str)
        and isinstance(type_, str)
        and type(version) is int
        and isinstance(data, dict)
        and (cause is None or isinstance(cause, dict))
    ):
        raise TypeError("a fact of the wrong shape")
    effective, recorded = datetime.fromisoformat(effective_at), datetime.fromisoformat(recorded_at)
    if effective.tzinfo is None or recorded.tzinfo is None:
        raise TypeError("a time without an offset")
    return Fact(stream, type_, version, effective, recorded, data, cause)


def _facts(document: dict[str, Any]) -> LogFacts:
    """LogFacts as `LogFacts.add` would have built them from the same events."""
    facts = LogFacts()
    position = document["position"]
    if type(position) is not int or position < 0:
        raise TypeError("position")
    facts.position = position
    for name, rows in document["accounts"].items():
        stream = facts.accounts[name] = [_fact(r) for r in rows]
        facts.region_of[name] = stream[0].data["region"]
    for code, rows in document["regions"].items():
        facts.regions[code] = [_fact(r) for r in rows]
    facts.members = {
        str(r): [str(a) for a in accounts] for r, accounts in document["members"].items()
    }
    facts.stream_of = {int(i): (str(kind), str(name)) for i, kind, name in document["streams"]}
    if len(facts.stream_of) < len(facts.accounts) + len(facts.regions):
        raise TypeError("streams missing")
    newest = document["newest_recorded_at"]
    facts.newest_recorded_at = datetime.fromisoformat(newest) if newest is not None else None
    return facts
