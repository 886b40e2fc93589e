"""Who asked, per account: the check index's records, packed in compressed blocks.

An account's own values (each event's `command_id` and `actor`, one per command, seldom
shared with another account) are one record: the values, FIELD between them, END after.
Records are appended to an open block; once it holds BLOCK bytes it is compressed (zlib)
and closed, so a record costs about 40% of its text (2 KB blocks of a store built by
`apply`: 26 B an account against 67 B as text). A record is read back (a Decision's
`because`, an account's facts) by decompressing its block, about 10 us; the last block read
is kept. A pointer (`block << OFFSET_BITS | offset`) names a record; it is one 8-byte slot
of the account's in the index's array. Nothing is ever removed: an account encoded again
leaves its old record behind, as it leaves its old times (a snapshot writes the live ones).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from itertools import accumulate, chain, repeat
from operator import add, eq

FIELD, END = "\x1f", "\x1e"
BLOCK = 2048  # bytes of records in a block before it is compressed
LEVEL = 6
OFFSET_BITS = 20  # a record starts within its block's first BLOCK bytes: fits
BLOCK_MAX = 1 << 24  # bytes a block may decompress to (a snapshot's, when checked)
CACHED = 1024  # blocks a caller's cache keeps (1 MB)
_END = END.encode()


class Records:
    """Every account's record. Readers take no lock: a block is in `blocks` before the open
    block is replaced, and a reader takes the open block before it looks at `blocks`."""

    def __init__(self, blocks: list[bytes] | None = None) -> None:
        self.blocks: list[bytes] = blocks if blocks is not None else []
        self.open = bytearray()
        self._last: tuple[int, bytes] = (-1, b"")  # the last block decompressed

    def add(self, record: bytes) -> int:
        """Append a record (its END included); its pointer."""
        pointer = len(self.blocks) << OFFSET_BITS | len(self.open)
        self.open += record
        if len(self.open) >= BLOCK:
            self.close()
        return pointer

    def close(self) -> None:
        """Compress the open block (a snapshot ends with every block closed)."""
        if self.open:
            self.blocks.append(zlib.compress(self.open, LEVEL))
            self.open = bytearray()

    def raw(self, pointer: int, cache: dict[int, bytes] | None = None) -> bytes:
        """The record's bytes, its END included. `cache`: blocks decompressed, kept by the
        caller (a snapshot reads every record, not always in block order)."""
        opened = self.open
        block, start = pointer >> OFFSET_BITS, pointer & ((1 << OFFSET_BITS) - 1)
        data: bytes | bytearray
        if block >= len(self.blocks):
            data = opened
        elif cache is not None:
            data = cache.get(block) or self._decompressed(block, cache)
        elif (last := self._last)[0] == block:
            data = last[1]
        else:
            data = zlib.decompress(self.blocks[block])
            self._last = (block, data)
        return bytes(data[start : data.index(_END, start) + 1])

    def _decompressed(self, block: int, cache: dict[int, bytes]) -> bytes:
        if len(cache) >= CACHED:
            cache.clear()
        data = cache[block] = zlib.decompress(self.blocks[block])
        return data

    def read(self, pointer: int) -> str:
        """The record's text, without its END."""
        return self.raw(pointer)[:-1].decode()

    @classmethod
    def checked(cls, blocks: list[bytes], pointers: Iterator[int], count: int) -> Records:
        """A snapshot's blocks, each decompressed once to check it: whole records of UTF-8,
        `count` of them, and `pointers` (every record's, in order) exactly where each
        record starts."""
        starts = [_starts(number, block) for number, block in enumerate(blocks)]
        if sum(map(len, starts)) != count:
            raise ValueError("records not one an account")
        if not all(map(eq, pointers, chain.from_iterable(starts))):
            raise ValueError("a record's start")
        return cls(blocks)


def _starts(number: int, block: bytes) -> list[int]:
    """Where each record of a block starts, as pointers."""
    d = zlib.decompressobj()
    try:
        data = d.decompress(block, BLOCK_MAX)
    except zlib.error as e:
        raise ValueError(f"a block that does not decompress: {e}") from None
    if not d.eof or d.unconsumed_tail or d.unused_data or not data.endswith(_END):
        raise ValueError("a block that is not whole records")
    if not data.isascii():
        data.decode("utf-8")
    lengths = map(len, data.split(_END)[:-1])  # the last: what follows the last END
    starts = list(accumulate(map(add, lengths, repeat(1)), initial=number << OFFSET_BITS))
    if starts.pop() - (number << OFFSET_BITS) != len(data) or len(data) > BLOCK_MAX:
        raise ValueError("a block's records")
    if starts[-1] - (number << OFFSET_BITS) >= 1 << OFFSET_BITS:
        raise ValueError("a record too far into its block")
    return starts
