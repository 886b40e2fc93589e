"""Reading and writing snapshot files safely: their bytes hashed on the way, and what a
damaged or crafted file can raise. No database here (snapshot_digests.py binds files to
their store): a copy with no store (entitlements.client) reads snapshots through this."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any, BinaryIO

#: What reading a crafted or damaged snapshot file can raise (gzip, JSON, base64, arrays,
#: a missing key, a deep nesting, a huge count): every snapshot reader turns these into
#: "ignore this file", never into a crash.
UNREADABLE: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    RecursionError,
    OverflowError,
    MemoryError,
    zlib.error,  # a flipped byte in the compressed stream (not an OSError)
)


class Hashed:
    """A binary file whose bytes, read or written through it, are hashed on the way (gzip
    reads and writes its compressed bytes through this: one pass, no copy)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._sha.update(data)
        return data

    def write(self, data: Any) -> int:
        self._sha.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def drain(self) -> None:
        """Read (and hash) what is left of the file: a digest is of every byte of it."""
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
