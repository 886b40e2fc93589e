"""What a copy of the check index outside the server needs (issue 19): the index's snapshot
with the position it is at and the chain head there (`snapshot export`, GET /v1/snapshot),
and the log's records after a position as plain JSON, each with the chain link that lets a
copy check it before applying it (GET /v1/stream).

The snapshot is the index snapshot a process saves (projections/snapshot.py: a JSON header
and arrays of numbers, nothing that can run), written from the index in memory under the
projector's lock, its header's `head` naming the event at its position and the chain hash
there (`chain`). A record is `{"position", "stream", "version", "topic", "state"}`, `state`
the stored state as its transcoder's JSON text (its `chain` = `{"prev", "hash"}` included):
a copy decodes it with the same transcoder, recomputes the link as `verify` does
(adapters/integrity.py), and only then applies it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.application import Application

from entitlements.adapters.integrity import head_at
from entitlements.application.engine import Engine
from projections import snapshot
from projections.log_reader import read_stored

PAGE = 500  # records read per select for a stream


@dataclass(frozen=True)
class Exported:
    """A snapshot as written: where, at which position, the chain head there, its SHA-256."""

    path: Path
    position: int
    chain_head: str
    digest: str


def export_snapshot(engine: Engine, path: Path) -> Exported:
    """Write the check index as it stands to `path` (atomic), with its position and the
    chain head there in its header (`head.chain`)."""
    projector = engine.projector
    with projector.lock:
        log = projector.log
        position = log.position
        head = dict(projector.fingerprint(position) or {"position": 0})
        head["chain"] = head_at(projector.app, position)
        digest = snapshot.write_index(
            path, projector.index, log, log.members, head, f".tmp{os.getpid()}"
        )
    return Exported(path, position, head["chain"], digest)


def snapshot_bytes(engine: Engine) -> tuple[bytes, Exported]:
    """The snapshot as bytes (GET /v1/snapshot), written through a temporary file."""
    with tempfile.TemporaryDirectory(prefix="entitlements-snapshot-") as folder:
        exported = export_snapshot(engine, Path(folder) / "snapshot.index")
        return exported.path.read_bytes(), exported


def transcoded(mapper: Any, stored: Any) -> str:
    """A stored state as its transcoder wrote it (JSON text, types marked), deciphered and
    decompressed: what a copy decodes with the same transcoder, and hashes as `verify`
    does; ValueError when it is no such text."""
    raw: bytes = bytes(stored)
    if mapper.cipher:
        raw = mapper.cipher.decrypt(raw)
    if mapper.compressor:
        raw = mapper.compressor.decompress(raw)
    return raw.decode()


def record_of(app: Application[Any], n: Any) -> dict[str, Any]:
    """One stored event as a copy applies and checks it (see the module's docstring)."""
    return {
        "position": n.id,
        "stream": str(n.originator_id),
        "version": n.originator_version,
        "topic": n.topic,
        "state": transcoded(app.mapper, n.state),
    }


def records_after(engine: Engine, after: int, limit: int = PAGE) -> list[dict[str, Any]]:
    """Up to `limit` records after position `after`, in log order."""
    for page in read_stored(engine.app, after, page=limit):
        return [record_of(engine.app, n) for n in page]
    return []


def encoded(record: dict[str, Any]) -> str:
    """A record as one line of JSON (an SSE `data:` line)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)
