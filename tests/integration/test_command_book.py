"""The writer's command book: only a writer builds one, it survives a restart through its
file, and a file that is not of this log (or not a book at all) is ignored."""

from __future__ import annotations

import gzip
import json

import pytest

from entitlements.application import command_book_file
from entitlements.application.command_book import _key
from entitlements.application.engine import Engine
from tests.conftest import read_jsonl, scenario_file


def commands() -> list[dict[str, object]]:
    return [
        {**c, "command_id": f"scenario-{n}"}
        for n, c in enumerate(read_jsonl(scenario_file("china-2020.jsonl")))
    ]


def test_a_process_that_only_checks_holds_no_command_book(store_url: str) -> None:
    with Engine(store_url) as writer:
        writer.apply(commands())
        assert writer.books.built is not None and len(writer.books.built) == len(commands())
    with Engine(store_url) as reader:
        reader.check("cn-free-01", "host")
        reader.capabilities("cn-pro-01", at="2020-10-01")
        assert reader.books.built is None


def test_the_book_file_carries_a_writer_across_a_restart(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_book_file, "SNAPSHOT_EVERY", 1)
    with Engine(store_url) as writer:
        first = writer.apply(commands())
        path = writer.books.path()
    assert path is not None and path.exists()
    with Engine(store_url) as again:
        assert again.books.load() is not None  # the file is of this log
        repeated = again.apply(commands())
    assert [r.duplicate for r in repeated] == [True] * len(first)
    assert [(r.status, r.reason, r.position) for r in repeated] == [
        (r.status, r.reason, r.position) for r in first
    ]


def test_a_book_file_of_another_log_or_crafted_is_ignored(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(command_book_file, "SNAPSHOT_EVERY", 1)
    with Engine(store_url) as writer:
        writer.apply(commands()[:5])
        path = writer.books.path()
    assert path is not None
    document = json.loads(gzip.decompress(path.read_bytes()))
    for crafted in (
        b"garbage",
        gzip.compress(b"\x80\x04K\x01."),  # a pickle
        gzip.compress(json.dumps({**document, "schema": 0}).encode()),
        gzip.compress(
            json.dumps({**document, "head": {**document["head"], "sha256": "0"}}).encode()
        ),
        gzip.compress(json.dumps({**document, "keys": "not base64!"}).encode()),
        gzip.compress(json.dumps({**document, "pending_fan_outs": [["x", 1, 2, 3]]}).encode()),
    ):
        path.write_bytes(crafted)
        with Engine(store_url) as again:
            assert again.books.load() is None
            (result,) = again.apply([commands()[0]])
            assert result.duplicate  # read from the log instead: still exactly once


def test_a_hash_that_matches_is_confirmed_in_the_store(store_url: str) -> None:
    with Engine(store_url) as writer:
        writer.apply(commands()[:3])
        book = writer.book
        book._positions[_key("never-used")] = 3  # as if another id hashed the same
        assert book.outcome(writer.app, "never-used") is None
        (result,) = writer.apply([{**commands()[3], "command_id": "never-used"}])
        assert result.status == "applied" and not result.duplicate
