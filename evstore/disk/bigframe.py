"""Frames too large to hold in memory at once, and batches read lazily.

A batch is one commit-log frame (docs/FORMAT.md), so one append of a million
events makes a frame of tens or hundreds of MB.  Reading such a frame whole
and decoding it into a list of four million objects costs ten to twenty
times its size in memory, for a reader that may want ten events of it.

Here a frame whose payload is over :data:`BIG` bytes is *checked* (magic,
both lengths, CRC) by reading it a chunk at a time, and only then are its
events decoded, one at a time, from the file (:class:`LazyBatch`): memory
stays bounded by one event whatever the size of the batch.  No byte is
decoded before the whole frame has passed its CRC, as for any frame.
Smaller frames keep the usual path (one read, one decode), faster for them.
"""
from __future__ import annotations

import os
import zlib

import msgpack

from .format import HEADER_SIZE, OVERHEAD, TRAILER_SIZE, FrameError

#: Payloads larger than this are checked in chunks and decoded lazily.
BIG = 1 << 20
#: Bytes read at a time when checking a big frame, and by a lazy decoder.
CHUNK = 1 << 20
READ_SIZE = 1 << 16
#: A batch's head (array header, stream id of at most 200 bytes, three
#: integers) always fits in this many bytes.
PREFIX = 4096
#: A lazy batch remembers where every STEP-th event starts, so that reading
#: a batch backwards a chunk at a time does not decode it from the start for
#: each chunk.
STEP = 1024

def _len4(n: int) -> bytes:
    return n.to_bytes(4, "big")


def check_big(fd: int, offset: int, n: int, crc: int, limit: int | None = None) -> int:
    """Check the frame of payload length ``n`` at ``offset`` (its magic
    already matched) without holding it in memory: its trailer, then its CRC,
    a chunk at a time.  Returns the offset just past it; raises FrameError
    ("short ..." when the file, or ``limit``, ends inside it)."""
    end = offset + n + OVERHEAD
    if limit is not None and end > limit:
        raise FrameError(f"short frame: needs {n + OVERHEAD} bytes, {limit - offset} present")
    trailer = os.pread(fd, TRAILER_SIZE, end - TRAILER_SIZE)
    if len(trailer) < TRAILER_SIZE:
        raise FrameError(f"short frame: needs {n + OVERHEAD} bytes, the file ends before")
    if trailer != _len4(n):
        raise FrameError(
            f"length mismatch: header {n}, trailer {int.from_bytes(trailer, 'big')}")
    if frame_crc(fd, offset, n) != crc:
        raise FrameError("checksum mismatch")
    return end


def frame_crc(fd: int, offset: int, n: int) -> int:
    """The CRC a frame at ``offset`` with payload length ``n`` should carry,
    computed a chunk at a time."""
    c = zlib.crc32(_len4(n))
    pos, left = offset + HEADER_SIZE, n
    while left:
        data = os.pread(fd, min(CHUNK, left), pos)
        if not data:
            raise FrameError(f"short frame: needs {n + OVERHEAD} bytes, the file ends before")
        c = zlib.crc32(data, c)
        pos += len(data)
        left -= len(data)
    return c


class BigPayload:
    """The payload of a big frame that has passed its checks, left in the
    file.  Holds its own descriptor (a dup), so it stays readable however
    long a caller keeps it; ``marks`` is shared by every reader of the frame
    (see :data:`STEP`)."""

    __slots__ = ("fd", "start", "size", "marks", "__weakref__")

    def __init__(self, fd: int, frame_offset: int, n: int, marks: list | None = None):
        self.fd = os.dup(fd)
        self.start = frame_offset + HEADER_SIZE
        self.size = n
        self.marks = [] if marks is None else marks

    def __len__(self) -> int:
        return self.size

    def prefix(self, k: int = PREFIX) -> bytes:
        return os.pread(self.fd, min(k, self.size), self.start)

    def reader(self, at: int = 0) -> "_Reader":
        return _Reader(self.fd, self.start + at, self.size - at)

    def read_at(self, at: int, size: int) -> bytes:
        """Up to ``size`` bytes of the payload from offset ``at``."""
        return os.pread(self.fd, max(min(size, self.size - at), 0), self.start + at)

    def crc_from(self, at: int, crc: int = 0) -> int:
        """zlib.crc32 of the payload from offset ``at``, continuing ``crc``."""
        while at < self.size:
            data = self.read_at(at, CHUNK)
            if not data:
                raise FrameError("the file ends inside a checked frame")
            crc = zlib.crc32(data, crc)
            at += len(data)
        return crc

    def read_all(self) -> bytes:
        """The whole payload (for callers that really need it in memory)."""
        return os.pread(self.fd, self.size, self.start)

    def __del__(self):
        try:
            os.close(self.fd)
        except (OSError, AttributeError, TypeError):
            pass


class _Reader:
    """A file-like ``read`` over a byte range, for msgpack.Unpacker."""

    __slots__ = ("fd", "pos", "left")

    def __init__(self, fd: int, pos: int, left: int):
        self.fd, self.pos, self.left = fd, pos, left

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.left:
            size = self.left
        if size == 0:
            return b""
        data = os.pread(self.fd, size, self.pos)
        self.pos += len(data)
        self.left -= len(data)
        return data


_ERRORS = (ValueError, TypeError, msgpack.UnpackException, msgpack.OutOfData, RecursionError)


class LazyBatch:
    """A committed batch whose events are decoded one at a time from its
    (checked) frame in the file: the interface of ``records.LogBatch``
    without ``fields``."""

    __slots__ = ("stream", "first_version", "first_position", "recorded_us", "count", "_p")

    def __init__(self, payload: BigPayload, head):
        self.stream, self.first_version, self.first_position, self.recorded_us, self.count = head
        self._p = payload

    @property
    def last_position(self) -> int:
        return self.first_position + self.count - 1

    @property
    def last_version(self) -> int:
        return self.first_version + self.count - 1

    def _seek(self, skip: int):
        """An unpacker at event ``skip`` (or the end): (unpacker, index of the
        event it is at, payload offset it started from).  It starts from the
        nearest mark at or before ``skip`` and records the marks it passes,
        so a later read of the same batch starts closer."""
        p = self._p
        marks = p.marks  # marks[k]: payload offset of event k * STEP
        k = min(skip // STEP, len(marks) - 1)
        i, at = (k * STEP, marks[k]) if k >= 0 else (0, 0)
        up = msgpack.Unpacker(p.reader(at), raw=False, strict_map_key=True, use_list=True,
                              read_size=READ_SIZE, max_buffer_size=max(p.size, READ_SIZE))
        skip_one = up.skip
        if k < 0:
            up.read_array_header()
            for _ in range(4):
                skip_one()
        while i < min(skip, self.count):
            self._mark(up, i, at)
            skip_one(); skip_one(); skip_one(); skip_one()  # noqa: E702
            i += 1
        return up, i, at

    def _mark(self, up, i: int, at: int) -> None:
        """Record the offset of event ``i`` when it starts a new STEP."""
        marks = self._p.marks
        if not i % STEP and i // STEP == len(marks):
            marks.append(at + up.tell())

    def events(self, skip: int = 0):
        from .records import MalformedBatch
        from ..model import RecordedEvent, us_to_datetime

        p = self._p
        when = us_to_datetime(self.recorded_us)
        stream, fv, fp, count = self.stream, self.first_version, self.first_position, self.count
        try:
            up, i, at = self._seek(skip)
            unpack = up.unpack
            while i < count:
                self._mark(up, i, at)
                eid = unpack()
                etype = unpack()
                data = unpack()
                meta = unpack()
                yield RecordedEvent(stream, fv + i, fp + i, eid, etype, data, meta, when)
                i += 1
            if at + up.tell() != p.size:
                raise MalformedBatch("commit-log frame payload does not decode: extra data")
        except _ERRORS as e:
            raise MalformedBatch(
                f"commit-log frame payload does not decode: {type(e).__name__}: {e}") from None

    def fields_chunks(self, skip: int = 0):
        """The flat fields (id, type, data, metadata, ...) of events from
        ``skip`` on, as (first index, list), up to :data:`STEP` events at a
        time (chunks end at multiples of STEP).  The values come straight
        from the unpacker, without an object per event (the NDJSON fast
        path, ``backends/files/ndjson.py``); the same checks as
        :meth:`events`."""
        from itertools import islice

        from .records import MalformedBatch

        p, count = self._p, self.count
        try:
            up, i, at = self._seek(skip)
            while i < count:
                self._mark(up, i, at)
                n = min(STEP - i % STEP, count - i)
                fields = list(islice(up, 4 * n))
                if len(fields) != 4 * n:
                    raise msgpack.OutOfData("the payload ends inside an event")
                yield i, fields
                i += n
            end = at + up.tell()
        except _ERRORS as e:
            raise MalformedBatch(
                f"commit-log frame payload does not decode: {type(e).__name__}: {e}") from None
        if end != p.size:
            raise MalformedBatch("commit-log frame payload does not decode: extra data")


def decode_head(payload):
    """``records.decode_batch_head`` of a payload, big or not."""
    from .records import decode_batch_head

    if isinstance(payload, BigPayload):
        return decode_batch_head(payload.prefix())
    return decode_batch_head(payload)


def decode(payload):
    """``records.decode_batch`` of a payload; a LazyBatch for a big one."""
    from .records import decode_batch, decode_batch_head

    if isinstance(payload, BigPayload):
        return LazyBatch(payload, decode_batch_head(payload.prefix()))
    return decode_batch(payload)
