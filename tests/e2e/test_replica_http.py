"""What a client keeping its own copy reads (issue 19): `snapshot export FILE`, GET
/v1/snapshot (the index snapshot with its position and chain head) and GET /v1/stream
(every record after a position, pushed, each linking to the one before by the chain)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from entitlements import open_engine
from entitlements.adapters.integrity import content, head_at, link
from entitlements.application.access import open_tokens
from entitlements.application.replica import snapshot_bytes
from entitlements.client.local_copy import transcoder
from entitlements.http import stream
from entitlements.http.app import create_app
from projections.snapshot import read_index
from tests.conftest import read_jsonl, scenario_file
from tests.e2e.cli_runner import entitlements
from tests.e2e.servers import start_server

REVOKE = {
    "command": "revoke_hosting",
    "account_id": "us-pro-01",
    "reason": "review",
    "effective_at": "2020-12-01",
}


def china(url: str) -> dict[str, str]:
    """The china-2020 story in the store at `url`; a checker's bearer header."""
    with open_engine(url) as engine:
        engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))
    with open_tokens(url) as tokens:
        return {"Authorization": f"Bearer {tokens.create('checker-1', 'checker')}"}


def test_snapshot_export_writes_the_index_at_the_head_with_the_chain_hash(
    store_url: str, tmp_path: Path
) -> None:
    china(store_url)
    file = tmp_path / "snapshot.index"
    done = entitlements("snapshot", "export", str(file), "--json", "--db", store_url)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    loaded, head = read_index(file)
    with open_engine(store_url) as engine:
        position = engine.position()
        assert summary["position"] == loaded.position == position
        assert head is not None and head["chain"] == summary["chain_head"]
        assert summary["chain_head"] == head_at(engine.app, position)
        assert set(loaded.accounts) == set(engine.index.accounts)
    assert summary["sha256"] == loaded.digest
    verify = entitlements("audit", "verify", "--json", "--db", store_url)
    assert summary["chain_head"] in verify.stdout


@pytest.fixture
def served(store_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    checker = china(store_url)
    with TestClient(create_app(store_url, follow=False), raise_server_exceptions=False) as client:
        yield client, checker


def test_the_snapshot_over_http_has_its_position_as_etag_and_the_chain_head(
    served: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    client, checker = served
    assert client.get("/v1/snapshot").status_code == 401
    got = client.get("/v1/snapshot", headers=checker)
    assert got.status_code == 200
    engine = client.app.state.worker.engine  # type: ignore[attr-defined]
    position = engine.position()
    assert got.headers["etag"] == f'"{position}"'
    assert got.headers["x-chain-head"] == head_at(engine.app, position)
    file = tmp_path / "got.index"
    file.write_bytes(got.content)
    loaded, head = read_index(file)
    assert loaded.position == position and loaded.digest == got.headers["x-snapshot-sha256"]
    assert head is not None and head["chain"] == got.headers["x-chain-head"]
    again = client.get("/v1/snapshot", headers={**checker, "If-None-Match": f'"{position}"'})
    assert again.status_code == 304 and again.content == b""
    bad = client.get("/v1/stream", headers={**checker, "Last-Event-ID": "x"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.text


def test_the_snapshot_is_made_again_only_once_the_index_moved_past_what_streams_keep(
    served: tuple[TestClient, dict[str, str]],
) -> None:
    """Commands arriving do not have the whole index written for every client that starts:
    the last snapshot serves while the stream still keeps what came after it."""
    client, checker = served
    cache = client.app.state.snapshots  # type: ignore[attr-defined]
    engine = client.app.state.worker.engine  # type: ignore[attr-defined]
    first = client.get("/v1/snapshot", headers=checker).headers["x-position"]
    revoke = {
        "command": "revoke_hosting",
        "account_id": "cn-pro-01",
        "reason": "r",
        "effective_at": "2021-01-01",
    }
    engine.apply([revoke])
    engine.catch_up()
    assert engine.index.position > int(first)
    assert client.get("/v1/snapshot", headers=checker).headers["x-position"] == first
    cache.behind = 0  # the streams keep nothing: a client gets the index as it stands
    now = client.get("/v1/snapshot", headers=checker).headers["x-position"]
    assert now == str(engine.index.position)


def test_a_worker_makes_its_snapshot_when_it_starts_and_a_request_meanwhile_waits_for_it(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first client does not pay for the export (seconds at a million accounts): the
    worker makes the snapshot once its index is loaded, without a request; a request
    arriving during that export waits for it and gets its bytes, and no second one runs."""
    checker = china(store_url)
    started, release = threading.Event(), threading.Event()

    def slow(engine: Any) -> Any:
        started.set()
        release.wait(10)
        return snapshot_bytes(engine)

    monkeypatch.setattr(stream, "snapshot_bytes", slow)
    with TestClient(create_app(store_url, follow=False)) as client:
        cache = client.app.state.snapshots  # type: ignore[attr-defined]
        assert started.wait(10), "no export without a request"
        assert client.get("/healthz").status_code == 200  # not held by the export
        got: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: got.append(client.get("/v1/snapshot", headers=checker))
        )
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive() and not got  # it waits for the export under way
        release.set()
        waiting.join(10)
        body, made = cache._made
        assert got[0].status_code == 200 and got[0].content == body
        assert got[0].headers["x-snapshot-sha256"] == made.digest
        assert cache.exports == 1


def test_a_worker_shut_down_during_its_start_export_closes_the_store_after_it(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start export runs in a thread that cancelling its task does not stop: shutdown
    waits for it before closing the store (SQLite closed under its query crashed the
    process: a segfault seen in a suite run)."""
    china(store_url)
    started, closing = threading.Event(), threading.Event()
    order: list[str] = []

    def slow(engine: Any) -> Any:
        started.set()
        closing.wait(10)  # the test has begun the shutdown
        # (a store already closed is not read: that would crash this process, not fail)
        made = snapshot_bytes(engine) if not order else None
        order.append("exported")
        return made

    monkeypatch.setattr(stream, "snapshot_bytes", slow)
    with TestClient(create_app(store_url, follow=False)) as client:
        assert started.wait(10)
        engine = client.app.state.worker.engine  # type: ignore[attr-defined]
        close = engine.close

        def closed_last() -> None:
            order.append("closed")
            close()

        engine.close = closed_last
        closing.set()
    assert order == ["exported", "closed"]


def events(lines: Iterator[str], n: int) -> tuple[list[dict[str, Any]], int]:
    """The next `n` record events of a stream (their data), and the comment lines met."""
    found: list[dict[str, Any]] = []
    comments, event_id = 0, None
    for line in lines:
        if line.startswith(":"):
            comments += 1
        elif line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            record = json.loads(line[6:])
            assert record["position"] == event_id
            found.append(record)
            if len(found) == n:
                break
    return found, comments


def links(records: list[dict[str, Any]], prev: str) -> str:
    """Each record's chain link checked from `prev` (as a client does); the last hash."""
    for r in records:
        state = transcoder().decode(r["state"].encode())
        chain = state["chain"]
        assert chain["prev"] == prev
        body = content(r["stream"], r["version"], r["topic"], state)
        assert link(prev, body) == chain["hash"]
        prev = chain["hash"]
    return prev


@pytest.mark.slow
def test_a_real_server_pushes_every_record_after_a_position_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    checker = china(url)
    monkeypatch.setenv("ENTITLEMENTS_HEARTBEAT", "0.2")
    process, base = start_server(url, workers=1, cache=tmp_path / "cache")
    try:
        with httpx.Client(base_url=base, headers=checker, timeout=15) as http:
            snap = http.get("/v1/snapshot")
            position, head = int(snap.headers["x-position"]), snap.headers["x-chain-head"]
            with open_engine(url) as engine:
                start = position - 5
                prev = head_at(engine.app, start)
                with http.stream("GET", "/v1/stream", params={"after": start}) as s:
                    lines = s.iter_lines()
                    old, _ = events(lines, 5)
                    assert [r["position"] for r in old] == list(range(start + 1, position + 1))
                    assert links(old, prev) == head
                    later = threading.Timer(0.5, lambda: engine.apply([REVOKE]))
                    later.start()
                    new, comments = events(lines, 1)
                    later.join()
                    assert new[0]["position"] == position + 1 and comments >= 1
                    head = links(new, head)
            resumed = {"Last-Event-ID": str(position)}
            with http.stream("GET", "/v1/stream", headers=resumed) as s:
                again, _ = events(s.iter_lines(), 1)
                assert again == new and links(again, snap.headers["x-chain-head"]) == head
    finally:
        process.terminate()
        process.wait(30)
