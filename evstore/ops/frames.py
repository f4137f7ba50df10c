"""Walking the frames of a segment file when the file may be damaged.

The core's readers stop at the first bad frame (a torn tail, or damage that
only ``evstore repair`` may touch).  Verify and repair must see past it: they
need every intact frame of a file, and the exact byte ranges that are not
frames, so that a flipped byte in the middle costs one frame and not the rest
of the file.  :func:`walk` gives both, in file order; after a bad frame it
resynchronises on the next offset where a whole valid frame starts (the
frame's magic, both lengths and its CRC must agree, so stray magic bytes in
event data do not fool it).

The payload parsers here read only the few msgpack fields that locate an
event (stream, version, position, time), without decoding its data: verify
runs them for every record of the store.
"""
from __future__ import annotations

import os
import struct
import zlib

from ..disk import bigframe
from ..disk.heads import _uint, batch_head  # noqa: F401  (verify's and repair's name for it)
from ..disk.segment import O_NOFOLLOW
from ..disk.format import HEADER_SIZE, OVERHEAD, FrameError

CHUNK = 4 << 20

_HDR = struct.Struct(">4sII")
_LEN = struct.Struct(">I")
_crc32 = zlib.crc32


def walk(fd: int, magic: bytes, size: int, start: int = 0, chunk: int = CHUNK,
         big: bool = False):
    """Yield the frames and the damaged ranges of ``[start, size)`` in order.

    Items are ``(True, offset, end, payload)`` for a valid frame (``payload``
    a memoryview, valid until the next item) and ``(False, offset, end,
    reason)`` for bytes that are not a valid frame; ``end`` is then where the
    next valid frame starts, or ``size`` when none follows (a *tail*).

    ``big``: a frame whose payload is over ``bigframe.BIG`` bytes is checked
    a chunk at a time and given as a ``bigframe.BigPayload`` (left in the
    file), so that a batch of a million events is never read whole.
    """
    pos = start
    buf = b""
    mv = memoryview(buf)
    base = start
    unpack_from = _HDR.unpack_from
    while pos < size:
        rel = pos - base
        if len(buf) - rel < HEADER_SIZE:
            buf = os.pread(fd, min(chunk, size - pos), pos)
            mv, base, rel = memoryview(buf), pos, 0
            if len(buf) < HEADER_SIZE:
                yield False, pos, size, f"{size - pos} stray bytes (not a whole frame header)"
                return
        m, n, crc = unpack_from(buf, rel)
        end = pos + n + OVERHEAD
        reason = None
        if m != magic:
            reason = f"bad magic {bytes(m)!r}"
        elif end > size:
            reason = f"incomplete frame: needs {n + OVERHEAD} bytes, {size - pos} present"
        elif big and n > bigframe.BIG:
            if os.pread(fd, 4, end - 4) != buf[rel + 4:rel + 8]:
                reason = "header and trailer lengths differ"
            elif bigframe.frame_crc(fd, pos, n) != crc:
                reason = "checksum mismatch"
            else:
                yield True, pos, end, bigframe.BigPayload(fd, pos, n)
                pos = end
                buf, base = b"", pos
                continue
        else:
            if end - base > len(buf):
                buf = os.pread(fd, max(chunk, end - pos), pos)
                mv, base, rel = memoryview(buf), pos, 0
            e = end - base
            if buf[e - 4:e] != buf[rel + 4:rel + 8]:
                reason = "header and trailer lengths differ"
            elif _crc32(mv[rel + HEADER_SIZE:e - 4], _crc32(mv[rel + 4:rel + 8])) != crc:
                reason = "checksum mismatch"
            else:
                yield True, pos, end, mv[rel + HEADER_SIZE:e - 4]
                pos = end
                continue
        nxt = next_frame(fd, magic, pos + 1, size)
        yield False, pos, size if nxt is None else nxt, reason
        if nxt is None:
            return
        pos = nxt
        buf, base = b"", pos


def frame_at(fd: int, magic: bytes, offset: int, size: int, head: bool = False):
    """The payload (bytes) of the valid frame at ``offset``, or None.
    ``offset`` may come from a damaged index: anything is allowed.
    ``head``: of a big frame, only the first bytes (bigframe.PREFIX), after
    checking the whole frame a chunk at a time."""
    if not 0 <= offset <= size - OVERHEAD:
        return None
    head = os.pread(fd, HEADER_SIZE, offset)
    if len(head) < HEADER_SIZE:
        return None
    m, n, crc = _HDR.unpack(head)
    if m != magic or offset + n + OVERHEAD > size:
        return None
    if head and n > bigframe.BIG:
        try:
            bigframe.check_big(fd, offset, n, crc, size)
        except FrameError:
            return None
        return os.pread(fd, bigframe.PREFIX, offset + HEADER_SIZE)
    data = os.pread(fd, n + 4, offset + HEADER_SIZE)
    if len(data) < n + 4 or data[n:] != head[4:8]:
        return None
    payload = data[:n]
    if _crc32(payload, _crc32(head[4:8])) != crc:
        return None
    return payload


def next_frame(fd: int, magic: bytes, start: int, size: int, chunk: int = CHUNK):
    """Offset of the first valid frame starting at or after ``start``, or None."""
    pos = start
    while pos < size:
        data = os.pread(fd, min(chunk + HEADER_SIZE, size - pos), pos)
        i = data.find(magic)
        while i != -1:
            if frame_at(fd, magic, pos + i, size) is not None:
                return pos + i
            i = data.find(magic, i + 1)
        if len(data) <= HEADER_SIZE:
            return None
        pos += len(data) - HEADER_SIZE + 1
    return None


# --- payload heads ------------------------------------------------------------

_FIXED_RECORD = struct.Struct(">BBQBQBQ")


def record_head(p) -> tuple[int, int, int, int]:
    """(version, position, recorded_us, length of this head) of a stream
    record payload; what follows the head is the event's packed fields, byte
    for byte the same as in its commit-log frame.  Raises ValueError."""
    if len(p) >= 28 and p[0] == 0x97 and p[1] == 0xCF and p[10] == 0xCF and p[19] == 0xCF:
        _, _, v, _, pos, _, us = _FIXED_RECORD.unpack_from(p)
        return v, pos, us, 28
    if len(p) < 4 or p[0] != 0x97:
        raise ValueError("stream record is not a 7-item array")
    v, i = _uint(p, 1)
    pos, i = _uint(p, i)
    us, i = _uint(p, i)
    return v, pos, us, i


# --- segment order ------------------------------------------------------------

def first_position(fd: int, size: int):
    """The first position of the first valid, readable frame of a commit-log
    segment (None when it holds none), and whether that frame is at offset 0."""
    from ..disk.format import LOG_MAGIC

    payload = frame_at(fd, LOG_MAGIC, 0, size, head=True)  # the usual case: one small read
    if payload is not None:
        try:
            return batch_head(payload)[2], True
        except (ValueError, IndexError, UnicodeDecodeError):
            pass
    for ok, off, _end, x in walk(fd, LOG_MAGIC, size, chunk=1 << 16, big=True):
        if ok:
            try:
                return batch_head(x)[2], off == 0
            except (ValueError, IndexError, UnicodeDecodeError):
                continue
    return None, False


def log_segment_order(ldir: str, firsts, suffix: str) -> list[tuple[int, int | None, bool]]:
    """The commit-log segments ``firsts`` in the order of the positions they
    hold: ``(name, first position held, misnamed)`` triples (``misnamed``: a
    valid first frame that is not the name's position).

    Why: a segment is named for its first position, so name order is
    position order -- unless a file sits under a wrong name (a segment copied
    or renamed by hand: ``81.log`` copied to ``2.log``).  Walked in name
    order, such a stray puts positions 81.. before 41..80, every real frame
    after it looks like a repeat, and a walker that trusts the first frame it
    meets for a position would throw the real segments away.  Ordered by
    what they hold, with a segment whose name agrees with its first frame
    before a stray holding the same positions, the stray's frames are the
    ones that repeat positions already present; a misnamed segment that is
    the only copy of its positions still fills its place.  For a sound store
    this is name order.
    """
    keyed = []
    for first in firsts:
        path = os.path.join(ldir, f"{first:016d}{suffix}")
        try:
            fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
        except OSError:
            keyed.append(((first, 0, first), first, None, False))
            continue
        try:
            fp, at_zero = first_position(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if fp is None:
            keyed.append(((first, 0, first), first, None, False))
        else:
            # a name that agrees with the first frame (or a segment whose
            # head is damaged but whose name is below what it holds) wins ties
            fits = fp == first or (not at_zero and first < fp)
            keyed.append(((fp, 0 if fits else 1, first), first, fp, at_zero and fp != first))
    keyed.sort()
    return [item[1:] for item in keyed]
