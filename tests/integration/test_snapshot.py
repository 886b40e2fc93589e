"""The index snapshot carries no code and is checked against the log before use: anything
else found at its path is ignored and the process reads the log instead."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from entitlements import open_engine
from entitlements.application.engine import Engine
from projections.projector import snapshot_path
from tests.conftest import read_jsonl, scenario_file


def apply_scenario(engine: Engine) -> None:
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl")))


def answers(engine: Engine) -> list[tuple[bool, int | None]]:
    return [
        (d.allowed, d.value)
        for a in ("cn-free-01", "cn-pro-01", "cn-ent-02", "us-pro-01")
        for d in engine.capabilities(a, at="2020-10-01")
    ]


class Boom:
    """What an attacker would put in a pickle: a callable run on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_process_starts_from_a_snapshot_that_names_the_event_at_its_position(
    store_url: str,
) -> None:
    with open_engine(store_url) as engine:
        apply_scenario(engine)
        expected = answers(engine)
        engine.projector.save_snapshot()
        position = engine.position()
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == position
        assert answers(fresh) == expected
        commands = read_jsonl(scenario_file("china-2020.jsonl"))
        assert len(fresh.book) == len(commands)  # the writer's book: every command, once
        (again,) = fresh.apply(
            [read_jsonl(scenario_file("china-2020.jsonl"))[0] | {"command_id": "x"}]
        )
        assert again.status == "rejected"  # the account exists: the snapshot's facts decide


@pytest.mark.parametrize(
    "crafted", ["pickle", "garbage", "old-schema", "wrong-types", "other-head"]
)
def test_a_crafted_or_stale_snapshot_is_ignored_and_runs_nothing(
    store_url: str, tmp_path: Path, crafted: str
) -> None:
    marker = tmp_path / "pwned"
    with open_engine(store_url) as engine:
        apply_scenario(engine)
        expected = answers(engine)
        engine.projector.save_snapshot()
    path = snapshot_path(store_url)
    header, _, sections = gzip.decompress(path.read_bytes()).partition(b"\n")
    document = json.loads(header)
    if crafted == "pickle":
        path.write_bytes(pickle.dumps({"position": 1, "facts": Boom(marker)}))
    elif crafted == "garbage":
        path.write_bytes(b"\x1f\x8b" + os.urandom(200))
    elif crafted == "old-schema":  # as schema 5 wrote it: one JSON document, no sections
        document["schema"] = 5
        path.write_bytes(gzip.compress(json.dumps(document).encode()))
    else:
        if crafted == "wrong-types":
            document["standins"][0][1] = ["1; rm -rf /"]
            sections = b"not an array!" + sections[13:]
        else:  # an index of another log, whose event at that position differs
            document["head"]["sha256"] = "0" * 64
            document["strings"][0] = "enterprise"
        path.write_bytes(gzip.compress(json.dumps(document).encode() + b"\n" + sections))
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == 0  # not used: the log was read
        assert answers(fresh) == expected
    assert not marker.exists()


def decisions(engine: Engine, accounts: list[str]) -> list[dict[str, Any]]:
    """Every answer (reason and `because` too) at a few times, without the position."""
    found = []
    for a in accounts:
        for at in (None, "2020-05-20", "2020-10-01", "2021-01-01"):
            for k in (None, "2020-06-01"):
                for d in engine.capabilities(a, at=at, as_known_at=k):
                    found.append({**d.as_dict(), "position": None})
    return found


def test_a_checking_process_keeps_no_facts_and_follows_the_log(store_url: str) -> None:
    accounts = ["cn-free-01", "cn-pro-01", "cn-ent-02", "us-pro-01", "new-01"]
    with open_engine(store_url) as writer:
        apply_scenario(writer)
        writer.projector.save_snapshot()
        with open_engine(store_url) as reader:
            assert reader.projector._facts is None  # started from the index alone
            assert decisions(reader, accounts[:4]) == decisions(writer, accounts[:4])
            # the writer moves on: an event of an account the reader knows only by its
            # index (its stream is asked of the store), a new account, a region rule
            results = writer.apply(
                [
                    {
                        "command": "revoke_hosting",
                        "account_id": "us-pro-01",
                        "reason": "audit",
                        "effective_at": "2020-09-01",
                        "command_id": "late-1",
                    },
                    {
                        "command": "register_account",
                        "account_id": "new-01",
                        "region": "US",
                        "plan": "pro",
                        "channel": "online",
                        "effective_at": "2020-07-01",
                    },
                    {
                        "command": "apply_region_rule",
                        "region": "US",
                        "rule": "online_subscriptions_closed",
                        "effective_at": "2020-09-15",
                    },
                ]
            )
            assert [r.status for r in results] == ["applied"] * 3, results
            reader.catch_up()
            assert reader.projector._facts is None
            assert reader.index.position == writer.index.position
            assert decisions(reader, accounts) == decisions(writer, accounts)
            # a command in the reader: it decides from the index (no Fact per account built)
            reader.projector.save_snapshot()
            (again,) = reader.apply(
                [
                    {
                        "command": "restore_hosting",
                        "account_id": "us-pro-01",
                        "reason": "audit passed",
                        "effective_at": "2020-12-01",
                    }
                ]
            )
            assert again.status == "applied", again.reason
            assert reader.projector._facts is None
            assert reader.facts.members == writer.facts.members
            writer.catch_up()
            assert decisions(reader, accounts) == decisions(writer, accounts)
    with open_engine(store_url) as fresh:  # from the reader's snapshot, then the log
        assert fresh.projector._snapshot_position > 0
        with open_engine(store_url) as other:
            assert decisions(fresh, accounts) == decisions(other, accounts)


# -- the file, crafted section by section: every one refused -----------------------------


def _written(path: Path) -> None:
    """A snapshot of accounts with records (ids and actors of their own), rule-caused
    events naming their trigger, accounts sharing templates, in two regions."""
    from benchmarks.synthetic import world_facts
    from projections import snapshot
    from projections.check_index import CheckIndex
    from projections.facts import Changed

    facts = world_facts(300)
    for i, (a, fs) in enumerate(facts.accounts.items()):
        data = {**fs[0].data, "actor": f"user:{a}", "command_id": f"cmd-{i}"}
        fs[0] = type(fs[0])(
            fs[0].stream, fs[0].type, 1, fs[0].effective_at, fs[0].recorded_at, data
        )
    index = CheckIndex()
    index.update(facts, Changed(accounts=set(facts.accounts), regions=set(facts.regions)))
    snapshot.write_index(path, index, facts, facts.members, {"head": 1}, ".tmp")


def _parts(path: Path) -> tuple[dict[str, Any], dict[str, bytearray]]:
    header, _, rest = gzip.decompress(path.read_bytes()).partition(b"\n")
    document = json.loads(header)
    sections, at = {}, 0
    for name, n in document["sections"]:
        sections[name] = bytearray(rest[at : at + n])
        at += n
    assert at == len(rest)
    return document, sections


def _put(path: Path, document: dict[str, Any], sections: dict[str, bytearray], tail: bytes) -> None:
    document["sections"] = [[name, len(data)] for name, data in sections.items()]
    body = b"".join(sections.values())
    path.write_bytes(gzip.compress(json.dumps(document).encode() + b"\n" + body + tail))


def _craft(case: str, document: dict[str, Any], sections: dict[str, bytearray]) -> bytes:
    """Change the file as `case` says; what to put after the sections."""
    from array import array

    from projections.records import OFFSET_BITS

    if case == "record-start":  # a pointer one byte into its record
        times = array("q", bytes(sections["times"]))
        i = next(i for i, t in enumerate(times) if t >> OFFSET_BITS == 0 and t & 0xFFFFF > 0)
        times[i] += 1
        sections["times"] = bytearray(times.tobytes())
    elif case == "block":  # a compressed block of records, garbled
        sections["who"][len(sections["who"]) // 2] ^= 0xFF
    elif case == "fewer-ids":
        sections["ids"] = sections["ids"].rsplit(b"\n", 1)[0]
    elif case == "same-id":
        first, rest = bytes(sections["ids"]).split(b"\n", 1)
        sections["ids"] = bytearray(first + b"\n" + first + rest[len(first) :])
    elif case == "not-utf8":
        sections["ids"][0] = 0xFF
    elif case == "template-of":
        sections["template_of"][0:4] = (10**6).to_bytes(4, "little")
    elif case == "member":
        sections["members"][0:4] = (10**6).to_bytes(4, "little")
    elif case == "times":
        del sections["times"][-8:]
    elif case == "shape-index":  # a template naming a shape the file does not have
        numbers = array("q", bytes(sections["tables"]))
        numbers[-1] = 10**9
        sections["tables"] = bytearray(numbers.tobytes())
    elif case == "order":
        sections = dict(reversed(sections.items()))
    elif case == "trailing":
        return b"\x00"
    elif case == "cut":
        del sections["members"][-1:]
    elif case == "header":
        document["values"] = "no"
    return b""


@pytest.mark.parametrize(
    "case",
    [
        "record-start",
        "block",
        "fewer-ids",
        "same-id",
        "not-utf8",
        "template-of",
        "member",
        "times",
        "shape-index",
        "order",
        "trailing",
        "cut",
        "header",
    ],
)
def test_a_snapshot_crafted_in_any_section_is_refused(tmp_path: Path, case: str) -> None:
    from projections import snapshot

    path = tmp_path / "crafted.index"
    _written(path)
    snapshot.read_index(path)  # as written: taken
    document, sections = _parts(path)
    _put(path, document, sections, b"")
    snapshot.read_index(path)  # taken apart and put together again: still taken
    tail = _craft(case, document, sections)
    if case == "order":
        sections = dict(reversed(sections.items()))
    _put(path, document, sections, tail)
    with pytest.raises(snapshot.SnapshotRefused):
        snapshot.read_index(path)
