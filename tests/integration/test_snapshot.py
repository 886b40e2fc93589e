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
from entitlements.engine import Engine
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
    document = json.loads(gzip.decompress(path.read_bytes()))
    if crafted == "pickle":
        path.write_bytes(pickle.dumps({"position": 1, "facts": Boom(marker)}))
    elif crafted == "garbage":
        path.write_bytes(b"\x1f\x8b" + os.urandom(200))
    else:
        if crafted == "old-schema":
            document["schema"] = 4
        elif crafted == "wrong-types":
            document["templates"][0][1] = "1; rm -rf /"
            document["times"] = "not base64!"
        else:  # an index of another log, whose event at that position differs
            document["head"]["sha256"] = "0" * 64
            document["shapes"][0][3] = "enterprise"
        path.write_bytes(gzip.compress(json.dumps(document).encode()))
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
