"""The client's copy (entitlements/client/local_copy.py) against the engine (issue 19): for
random histories, a copy started from a snapshot taken partway and fed the log's records
one command at a time answers every check exactly as the engine does, at every position it
reaches; a snapshot or a record that does not verify is refused, not applied."""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements import open_engine
from entitlements.application.engine import Engine
from entitlements.application.replica import export_snapshot, records_after
from entitlements.client.local_copy import LocalCopy, Refused
from entitlements.domain.decisions import UnknownAccount
from entitlements.domain.rules import CAPABILITIES
from tests.conftest import read_jsonl, scenario_file
from tests.integration.test_equivalence import ACCOUNT_POOL, day, scenarios

DAYS = (None, -1, 0, 45, 120, 250, 366)  # effective and known times probed (None: now/all)


def follow(copy: LocalCopy, engine: Engine) -> list[int]:
    """Feed the copy every record the engine's log has past the copy's position."""
    applied = []
    while records := records_after(engine, copy.position):
        for r in records:
            assert copy.apply(json.loads(json.dumps(r))) is not None  # as sent: JSON
            applied.append(r["position"])
    return applied


def answers(ask: Any, account_id: str) -> list[Any]:
    """Every capability of the account at every (T, K) of the grid; for an account the
    index does not know, its one error (the engine reads the store again for each ask of
    an unknown account: a third of the test's time, for the same error every time)."""
    got: list[Any] = []
    for t in DAYS:
        for k in DAYS:
            at = None if t is None else day(t)
            known = None if k is None else day(k)
            for cap in CAPABILITIES:
                try:
                    got.append(ask(account_id, cap, at=at, as_known_at=known))
                except UnknownAccount as e:
                    return [*got, str(e)]
    return got


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands=scenarios(), split=st.integers(0, 30))
def test_a_copy_answers_as_the_engine_at_every_position_it_reaches(
    commands: list[dict[str, Any]], split: int
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="local-copy-") as tmp,
        open_engine(f"sqlite:///{Path(tmp) / 'entitlements.db'}") as engine,
    ):
        before, after = commands[:split], commands[split:]
        if before:
            engine.apply(before)
        export_snapshot(engine, Path(tmp) / "snapshot.index")
        copy = LocalCopy(Path(tmp) / "snapshot.index")
        seen = [copy.position]
        for cmd in [None, *after]:
            if cmd is not None:
                engine.apply([cmd])
            seen += follow(copy, engine)
            assert copy.position == engine.position()
            for account_id in ACCOUNT_POOL:
                assert answers(copy.index.check, account_id) == answers(engine.check, account_id), (
                    f"{account_id} at position {copy.position}"
                )
        assert seen == sorted(set(seen))  # in order, none twice


@pytest.fixture
def china(tmp_path: Path) -> tuple[Engine, Path]:
    engine = open_engine(f"sqlite:///{tmp_path / 'entitlements.db'}")
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl"))[:20])
    export_snapshot(engine, tmp_path / "snapshot.index")
    engine.apply(read_jsonl(scenario_file("china-2020.jsonl"))[20:])
    return engine, tmp_path / "snapshot.index"


def gzipped(data: bytes) -> bytes | None:
    """What a gzip file holds, None when it does not read. Deflate has bits that change
    nothing (measured: one or two bytes of a 2 KB snapshot flip with the same content and
    CRC); the file's digest differs all the same."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def test_a_damaged_or_mislabelled_snapshot_is_refused(
    china: tuple[Engine, Path], tmp_path: Path
) -> None:
    engine, file = china
    whole = file.read_bytes()
    digest = hashlib.sha256(whole).hexdigest()  # what the server says of its snapshot
    for at in range(10, len(whole), max(1, len(whole) // 40)):  # a byte flipped anywhere
        data = bytearray(whole)
        data[at] ^= 0xFF
        (tmp_path / "flipped").write_bytes(bytes(data))
        with pytest.raises(Refused, match="^snapshot: "):  # the server's digest: any byte
            LocalCopy(tmp_path / "flipped", {"digest": digest})
        if gzipped(bytes(data)) == gzipped(whole):
            continue  # a bit of the deflate stream that changes nothing it holds
        with pytest.raises(Refused, match="^snapshot: "):  # alone: what it holds is checked
            LocalCopy(tmp_path / "flipped")
    with pytest.raises(Refused, match="chain_head"):
        LocalCopy(file, {"chain_head": "0" * 64})
    header, _, rest = gzip.decompress(file.read_bytes()).partition(b"\n")
    document = json.loads(header)
    document["head"]["chain"] = "1" * 64  # a file claiming another chain head
    (tmp_path / "relabelled").write_bytes(
        gzip.compress(json.dumps(document).encode() + b"\n" + rest)
    )
    copy = LocalCopy(tmp_path / "relabelled")
    with pytest.raises(Refused, match="not to our head"):
        follow(copy, engine)
    assert copy.position == document["position"]  # nothing applied
    engine.close()


def test_a_tampered_or_misplaced_record_is_refused_and_a_repeat_skipped(
    china: tuple[Engine, Path],
) -> None:
    engine, file = china
    copy = LocalCopy(file)
    first, second = records_after(engine, copy.position)[:2]
    tampered = dict(first, state=first["state"].replace('"reason":"', '"reason":"x'))
    assert tampered != first
    for bad, why in [
        (tampered, "does not hash"),
        (second, "not to our head"),
        (dict(first, topic="os:system"), "topic"),
        (dict(first, state="{"), "not a record"),
    ]:
        with pytest.raises(Refused, match=why):
            copy.apply(bad)
        assert copy.position == first["position"] - 1
    assert copy.apply(first) is not None and copy.apply(first) is None  # applied once
    assert copy.apply(second) is not None
    engine.close()
