"""Snapshot files are bound to their store (SQLite and PostgreSQL): a file whose SHA-256 the
store has not on record for its position is ignored, though every check of its own passes
(two accounts swapped, a stale index relabelled with the head's fingerprint, a command
book with an entry dropped); the process reads the log, says so in one line on stderr, and
counts it in /metrics. A file the store wrote is used, silently."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.application import command_book_file
from entitlements.application.access import open_tokens
from entitlements.application.engine import Engine
from entitlements.http.app import create_app
from projections.projector import snapshot_path
from tests.conftest import read_jsonl, scenario_file

NOTICE = "entitlements: ignored the"
REVOKE = {
    "command": "revoke_hosting",
    "account_id": "us-pro-01",
    "reason": "audit",
    "effective_at": "2020-09-01",
}


def china(engine: Engine) -> None:
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))


def parts(path: Path) -> tuple[dict[str, Any], bytes]:
    header, _, sections = gzip.decompress(path.read_bytes()).partition(b"\n")
    return json.loads(header), sections


def put(path: Path, document: dict[str, Any], sections: bytes) -> None:
    path.write_bytes(gzip.compress(json.dumps(document).encode() + b"\n" + sections))


def swap_accounts(path: Path, a: str, b: str) -> None:
    """Swap two accounts' ids in the index's `ids` section: each takes the other's rows.
    Every check of the file's own still passes (same lengths, same ids, same head)."""
    document, body = parts(path)
    at = 0
    for name, n in document["sections"]:
        if name == "ids":
            ids = body[at : at + n].decode().split("\n")
            i, j = ids.index(a), ids.index(b)
            ids[i], ids[j] = b, a
            body = body[:at] + "\n".join(ids).encode() + body[at + n :]
            break
        at += n
    put(path, document, body)


def notices(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(NOTICE)]


def test_a_snapshot_with_two_accounts_swapped_is_ignored_and_said_once(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_engine(store_url) as engine:
        china(engine)
        truth = engine.check("cn-free-01", "host")
        other = engine.check("cn-free-02", "host")
        assert (truth.allowed, other.allowed) == (False, True)
        engine.projector.save_snapshot()
    path = snapshot_path(store_url)
    swap_accounts(path, "cn-free-01", "cn-free-02")
    capsys.readouterr()
    with open_engine(store_url) as fresh:
        assert fresh.check("cn-free-01", "host").allowed is False
        assert fresh.check("cn-free-02", "host").allowed is True
        assert fresh.check("cn-free-01", "host").as_dict() == truth.as_dict()
        assert fresh.projector._snapshot_position == 0  # not used: the log was read
        position = fresh.position()
    (line,) = notices(capsys.readouterr().err)
    assert "index snapshot" in line and "not on record in the store" in line
    with open_engine(store_url) as again:  # the refused file was replaced by one on record
        assert again.projector._snapshot_position == position
        assert again.check("cn-free-01", "host").as_dict() == truth.as_dict()
    assert notices(capsys.readouterr().err) == []


def test_a_stale_snapshot_relabelled_with_the_head_cannot_hide_a_revocation(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_engine(store_url) as engine:
        china(engine)
        engine.projector.save_snapshot()
        stale = snapshot_path(store_url).read_bytes()
        (result,) = engine.apply([REVOKE])
        assert result.status == "applied", result.reason
        assert engine.check("us-pro-01", "host").allowed is False
        head = engine.projector.fingerprint(engine.position())
        position = engine.position()
    path = snapshot_path(store_url)
    path.write_bytes(stale)
    document, sections = parts(path)
    document["position"], document["head"] = position, head  # relabelled as of the head
    put(path, document, sections)
    capsys.readouterr()
    with open_engine(store_url) as fresh:
        assert fresh.check("us-pro-01", "host").allowed is False
        assert fresh.projector._snapshot_position == 0
    (line,) = notices(capsys.readouterr().err)
    assert f"for position {position}" in line


def test_a_snapshot_the_store_wrote_is_used_without_a_notice(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_engine(store_url) as engine:
        china(engine)
        expected = engine.check("cn-free-01", "host").as_dict()
        engine.projector.save_snapshot()
        position = engine.position()
    capsys.readouterr()
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == position
        assert fresh.check("cn-free-01", "host").as_dict() == expected
    assert notices(capsys.readouterr().err) == []


def test_an_old_snapshot_on_record_is_used_then_caught_up(store_url: str) -> None:
    """A file is of the position it was written at: an unaltered older one still serves."""
    with open_engine(store_url) as engine:
        china(engine)
        engine.projector.save_snapshot()
        position = engine.position()
        engine.apply([{**REVOKE, "reason": "x"}])
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == position
        assert fresh.check("us-pro-01", "host").allowed is False


def test_a_command_book_with_an_entry_dropped_is_ignored(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    monkeypatch.setattr(command_book_file, "SNAPSHOT_EVERY", 1)
    commands = [
        {**c, "command_id": f"c-{n}"}
        for n, c in enumerate(read_jsonl(scenario_file("china-2020.jsonl"))[:5])
    ]
    with Engine(store_url) as writer:
        writer.apply(commands)
        path = writer.books.path()
    assert path is not None
    with Engine(store_url) as again:
        assert again.books.load() is not None  # as the store wrote it: used
    assert notices(capsys.readouterr().err) == []
    document = json.loads(gzip.decompress(path.read_bytes()))
    keys = base64.b64decode(document["keys"])
    positions = base64.b64decode(document["positions"])
    document["keys"] = base64.b64encode(keys[8:]).decode()  # the first command forgotten
    document["positions"] = base64.b64encode(positions[8:]).decode()
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    with Engine(store_url) as again:
        (result,) = again.apply([commands[0]])
        assert result.duplicate  # the book was read from the log: still exactly once
    (line,) = notices(capsys.readouterr().err)
    assert "commands snapshot" in line
    with Engine(store_url) as again:  # the refused book was replaced by one on record
        assert again.books.load() is not None
    assert notices(capsys.readouterr().err) == []


def test_http_answers_the_truth_and_counts_the_refused_snapshot(store_url: str) -> None:
    with open_engine(store_url) as engine:
        china(engine)
        engine.projector.save_snapshot()
    swap_accounts(snapshot_path(store_url), "cn-free-01", "cn-free-02")
    token = open_tokens(store_url).create("auditor-1", "auditor")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(store_url, follow=False), raise_server_exceptions=False) as client:
        r = client.get("/v1/accounts/cn-free-01/can/host", headers=headers)
        assert r.status_code == 200 and r.json()["allowed"] is False
        r = client.get("/v1/accounts/cn-free-01/explain/host", headers=headers)
        assert r.status_code == 200 and r.json()["allowed"] is False, r.text
        metrics = client.get("/metrics").text
    assert 'entitlements_snapshots_refused_total{kind="index"} 1.0' in metrics
