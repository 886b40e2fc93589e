"""The index snapshot carries no code and is checked against the log before use: anything
else found at its path is ignored and the process reads the log instead."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

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
            document["schema"] = 1
        elif crafted == "wrong-types":
            document["accounts"]["cn-free-01"][0][2] = "1; rm -rf /"
        else:  # facts of another log, whose event at that position differs
            document["head"]["sha256"] = "0" * 64
            document["accounts"]["cn-free-01"][0][5]["plan"] = "enterprise"
        path.write_bytes(gzip.compress(json.dumps(document).encode()))
    with open_engine(store_url) as fresh:
        assert fresh.projector._snapshot_position == 0  # not used: the log was read
        assert answers(fresh) == expected
    assert not marker.exists()
