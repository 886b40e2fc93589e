"""The index's records of who asked: read back as written, whether their block is still
open or compressed; a snapshot's blocks checked, and refused when not whole records."""

from __future__ import annotations

import zlib

import pytest

from projections import records
from projections.records import END, FIELD, Records


def _record(i: int) -> bytes:
    return FIELD.join([f"user:acct-{i:07d}", f"auto:{i:040x}", "", "José"]).encode() + END.encode()


def test_records_read_back_as_written_open_or_compressed() -> None:
    kept = Records()
    pointers = [kept.add(_record(i)) for i in range(500)]
    assert len(kept.blocks) > 10 and kept.open  # most compressed, the last block open
    assert [kept.raw(p) for p in pointers] == [_record(i) for i in range(500)]
    assert kept.read(pointers[7]) == _record(7).decode()[:-1]
    kept.close()
    assert not kept.open
    assert [kept.raw(p) for p in pointers[::-1]] == [_record(i) for i in range(500)][::-1]
    assert sum(map(len, kept.blocks)) < 0.6 * sum(len(_record(i)) for i in range(500))


def test_a_snapshots_blocks_are_taken_when_whole_and_where_the_pointers_say() -> None:
    kept = Records()
    pointers = [kept.add(_record(i)) for i in range(300)]
    kept.close()
    again = Records.checked(list(kept.blocks), iter(pointers), 300)
    assert [again.raw(p) for p in pointers] == [_record(i) for i in range(300)]
    with pytest.raises(ValueError):
        Records.checked(list(kept.blocks), iter(pointers[:-1]), 299)  # a record no account has
    with pytest.raises(ValueError):
        Records.checked(list(kept.blocks), iter([*pointers, pointers[-1]]), 301)
    with pytest.raises(ValueError):
        Records.checked(list(kept.blocks), iter([pointers[0] + 1, *pointers[1:]]), 300)
    with pytest.raises(ValueError):
        Records.checked(list(kept.blocks), iter([*pointers[1:], pointers[0]]), 300)


@pytest.mark.parametrize(
    "block",
    [
        zlib.compress(b"no end"),
        zlib.compress(b"\xff\xfe" + END.encode()),  # not UTF-8
        zlib.compress(END.encode())[:-2],  # cut short
        zlib.compress(END.encode()) + b"more",
        b"not zlib at all",
        zlib.compress(b"x" * 5000 + END.encode()),  # more than a block may hold (below)
    ],
)
def test_a_block_that_is_not_whole_records_is_refused(
    block: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "BLOCK_MAX", 4096)
    with pytest.raises(ValueError):
        Records.checked([block], iter([0]), 1)
