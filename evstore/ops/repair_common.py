"""What the repair passes share: the plan of the commit log as repair will
leave it (``LogPlan``, its ``OutSeg`` segments, the stream-log ``Copy`` that
may stand in for a lost event) and small byte and report helpers.

Kept apart so that each pass (plan, fill, streams, tidy) is a module of its
own that imports this one, and none imports another.
"""
from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field


from ..disk.format import STREAM_MAGIC
from ..model import format_timestamp, unpack, us_to_datetime
from . import layout as L
from ..disk.frames import frame_at
from ..disk.heads import record_head


# --- plan data -------------------------------------------------------------------

@dataclass
class Copy:
    """A stream-log record that may stand in for a lost commit-log event."""

    stream: str
    v: int
    p: int
    us: int
    path: str
    off: int


@dataclass
class OutSeg:
    """One commit-log segment as repair will leave it."""

    old: int | None  # the old segment it is made from (None: a new one)
    first: int = 0
    last: int = 0
    pieces: list = field(default_factory=list)  # ("copy", fd, start, end) | ("bytes", b)
    size: int = 0
    entries: array = field(default_factory=lambda: array("Q"))
    old_size: int = 0

    def add_copy(self, fd: int, start: int, end: int) -> int:
        off = self.size
        if self.pieces and self.pieces[-1][0] == "copy" and self.pieces[-1][1] == fd \
                and self.pieces[-1][3] == start:
            self.pieces[-1] = ("copy", fd, self.pieces[-1][2], end)
        else:
            self.pieces.append(("copy", fd, start, end))
        self.size += end - start
        return off

    def add_bytes(self, data: bytes) -> int:
        off = self.size
        self.pieces.append(("bytes", data))
        self.size += len(data)
        return off

    @property
    def untouched(self) -> bool:
        return (self.old == self.first and len(self.pieces) == 1 and self.pieces[0][0] == "copy"
                and self.pieces[0][2] == 0 and self.pieces[0][3] == self.old_size)


@dataclass
class LogPlan:
    segs: list = field(default_factory=list)
    removed: list = field(default_factory=list)  # (fd, path, start, end, reason)
    old_firsts: list = field(default_factory=list)
    head: int = 0
    versions: dict = field(default_factory=dict)
    digests: dict = field(default_factory=dict)
    cut: int | None = None
    lost: list = field(default_factory=list)  # (first, last) position ranges
    cut_frames: list = field(default_factory=list)  # (fd, off, end) valid frames after the cut
    cut_events: int = 0
    restored: int = 0
    extended: int = 0
    fds: dict = field(default_factory=dict)
    misnamed: dict = field(default_factory=dict)  # segment name -> the position it starts with


# --- small helpers the passes share ----------------------------------------------

def _bytes_under(path: str) -> int:
    return sum(L.file_size(os.path.join(path, f)) for f in L.listdir(path))


def _merge(removed):
    """Merge adjacent removed ranges of the same file."""
    out = []
    for fd, path, start, end, reason in sorted(removed, key=lambda r: (r[1], r[2])):
        if out and out[-1][1] == path and out[-1][3] >= start:
            o = out[-1]
            out[-1] = (o[0], path, o[2], max(o[3], end), _join_reasons(o[4], reason))
        else:
            out.append((fd, path, start, end, reason))
    return out


def _join_reasons(a: str, b: str) -> str:
    import re

    if a == b or b in a:
        return a
    m1 = re.search(r"(?:\A|; )repeats positions (\d+)\.\.\d+ already present\Z", a)
    m2 = re.match(r"repeats positions \d+\.\.(\d+) already present\Z", b)
    if m1 and m2:
        return (a[:m1.start()] + ("; " if m1.start() else "")
                + f"repeats positions {m1.group(1)}..{m2.group(1)} already present")
    return f"{a}; {b}"


def _blobs_from(blobs, n: int) -> list[bytes]:
    """The ``n`` events' packed fields in a batch's payload tail."""
    from .checks import split_blobs
    return split_blobs(blobs, 0, n)


def _starts_at(path: str, first: int) -> bool:
    """Whether stream segment ``first`` begins with a valid record of that version."""
    spath = L.seg_path(path, first, L.STREAM_SEG)
    try:
        opening = L.opened(spath)
    except OSError:
        return False
    with opening as fd:
        try:
            payload = frame_at(fd, STREAM_MAGIC, 0, os.fstat(fd).st_size)
            return payload is not None and record_head(payload)[0] == first
        except (ValueError, IndexError):
            return False


def _copy(fd: int, start: int, end: int, out) -> None:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(end - pos, 8 << 20), pos)
        if not chunk:
            raise OSError(f"short read at {pos}")
        out.write(chunk)
        pos += len(chunk)


def _line(stream, v, p, us, eid, etype, data, metadata) -> str:
    from ..features.jsonio import dumps

    return dumps({"stream": stream, "version": v, "position": p, "id": eid, "type": etype,
                  "data": data, "metadata": metadata,
                  "recorded_at": format_timestamp(us_to_datetime(us))})


def _batch_lines(payload):
    items = unpack(payload)
    stream, fv, fp, us = items[:4]
    f = items[4:]
    for i in range(len(f) // 4):
        yield _line(stream, fv + i, fp + i, us, *f[4 * i:4 * i + 4])
