"""Offset indexes: a cache that maps a dense number to a frame's offset.

Each segment ``NNN.seg``/``NNN.log`` has a sibling ``NNN.idx``: a flat array of
unsigned 64-bit big-endian offsets, entry *i* giving where the frame holding
number ``first + i`` starts (number = version for stream segments, position
for commit-log segments).  Entry *i* is found with one ``pread`` at ``8*i``,
so seeking costs the same in a stream of a thousand events or ten million.

The index is never trusted: it is written after the data, not fsynced on
commit (only once, when the commit log rolls past its segment), and whoever uses an entry checks that the frame it points at is valid and carries
the number asked for.  When the index is short (a crash lost its tail) or
wrong, it is rebuilt by scanning the segment -- data is the truth, the index a
cache (docs/FORMAT.md, "Indexes").
"""
from __future__ import annotations

import os
import struct
import sys
from array import array

from .segment import open_file

ENTRY = struct.Struct(">Q")
ENTRY_SIZE = 8
assert ENTRY.size == ENTRY_SIZE


class OffsetIndex:
    """One ``.idx`` file, opened for reading and (by the lock holder) writing."""

    def __init__(self, path: str, writable: bool = False):
        self.path = path
        flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
        self.fd = open_file(path, flags, 0o666)
        self.writable = writable

    def __len__(self) -> int:
        return os.fstat(self.fd).st_size // ENTRY_SIZE

    def get(self, i: int) -> int | None:
        """Offset for entry ``i``, or None past the end."""
        data = os.pread(self.fd, ENTRY_SIZE, i * ENTRY_SIZE)
        if len(data) < ENTRY_SIZE:
            return None
        return ENTRY.unpack(data)[0]

    def last(self) -> tuple[int, int] | None:
        """(i, offset) of the last complete entry, or None when empty."""
        n = len(self)
        if n == 0:
            return None
        return n - 1, self.get(n - 1)

    def extend(self, start: int, offsets) -> None:
        """Write entries ``start, start+1, ...``; drops any entries past them."""
        entries = array("Q", offsets)  # 8 bytes an entry, not a bytes object each
        if sys.byteorder == "little":
            entries.byteswap()  # entries are big-endian
        data = entries.tobytes()
        os.pwrite(self.fd, data, start * ENTRY_SIZE)
        end = start * ENTRY_SIZE + len(data)
        if os.fstat(self.fd).st_size > end:
            os.ftruncate(self.fd, end)

    def sync(self) -> None:
        from .segment import fsync_file

        fsync_file(self.fd)

    def truncate(self, n: int) -> None:
        os.ftruncate(self.fd, n * ENTRY_SIZE)

    def all(self) -> list[int]:
        data = os.pread(self.fd, len(self) * ENTRY_SIZE, 0)
        return [o for (o,) in ENTRY.iter_unpack(data[: len(data) // 8 * 8])]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_index(path: str, offsets) -> None:
    """Make ``path`` the index holding exactly ``offsets`` (created or
    replaced in place: an index is a cache, rebuilt from its segment)."""
    idx = OffsetIndex(path, writable=True)
    try:
        idx.truncate(0)
        idx.extend(0, offsets)
    finally:
        idx.close()
