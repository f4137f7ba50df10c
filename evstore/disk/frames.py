"""The frames of a segment file, walked: the one walker of the file engine.

:mod:`evstore.disk.format` says what one frame is; this module finds them in
a file.  Every reader, recovery, verify and repair walks frames through it,
so what counts as a frame, where a damaged range ends and what a short tail
is are decided in one place:

* :func:`walk` yields each valid frame of a byte range, and each range of
  bytes that is not one, in file order.  With ``resync`` (verify, repair)
  it goes on after a bad frame from the next offset where a whole valid
  frame starts, so a flipped byte in the middle costs one frame and not the
  rest of the file; without it (readers, recovery) it stops there.
* :func:`iter_frames` (readers of committed bytes: any bad frame is damage)
  and :func:`scan` (where the valid frames of a file end, and why) are
  :func:`walk` without resync; :func:`frame_batches` is :func:`iter_frames`
  a buffer at a time (its plain frames checked in one loop, the rest by
  :func:`walk`), for compaction's rewrites.
* :func:`read_frame`, :func:`read_head`, :func:`frame_at` and
  :func:`frame_before` read the one frame at an offset (forwards, or the one
  that ends at an offset); :func:`next_frame` finds the next valid frame.
* :func:`torn_by_power_cut` and :func:`tail_is_torn`: whether the bytes after
  the last valid frame are a write that never completed (cut by writers and
  reported as harmless by verify) or damage to a frame that was once whole.

Reasons given for bad bytes are those of :func:`format.check_frame`; the
ones that start with "short" mean the file ends inside the frame.
"""
from __future__ import annotations

import os
import zlib

from ..plain import dataclass  # not dataclasses: start-up time (see there)
from . import bigframe
from .format import (
    HEADER,
    HEADER_SIZE,
    OVERHEAD,
    TRAILER,
    TRAILER_SIZE,
    FrameError,
    check_frame,
    is_short,
)

#: Bytes read at a time by readers (a stream read from an offset wants few).
CHUNK = 1 << 20
#: Bytes read at a time by whole-file walks (verify, repair).
SCAN_CHUNK = 4 << 20

#: No frame starts this far into a file; a larger offset (from a damaged
#: ``.idx`` entry) would make ``pread`` raise OverflowError or EINVAL.
MAX_OFFSET = 1 << 56

_crc32 = zlib.crc32


def file_size(fd: int) -> int:
    return os.fstat(fd).st_size


# --- walking a range ------------------------------------------------------------

def walk(fd: int, magic: bytes, size: int, start: int = 0, chunk: int = SCAN_CHUNK,
         big=False, resync: bool = True):
    """Yield the frames and the damaged ranges of ``[start, size)`` in order.

    Items are ``(True, offset, end, payload)`` for a valid frame (``payload``
    a memoryview) and ``(False, offset, end, reason)`` for bytes that are
    not one; ``end`` is then where the next valid frame starts, or ``size``
    when none follows (a *tail*), or without ``resync`` always ``size``: the
    walk ends there.  ``size`` may be less than the file's (a committed end).

    ``big`` (True, or a dict the caller keeps for one file to remember the
    big frames already checked, offset -> the payload's shared marks): a
    frame whose payload is over ``bigframe.BIG`` bytes is checked a chunk at
    a time and given as a ``bigframe.BigPayload`` (left in the file), so
    that a batch of a million events is never read whole.
    """
    pos = start
    buf = b""
    mv = memoryview(buf)
    base = start
    unpack_from = HEADER.unpack_from
    while pos < size:
        rel = pos - base
        if len(buf) - rel < HEADER_SIZE:
            buf = os.pread(fd, min(chunk, size - pos), pos)
            mv, base, rel = memoryview(buf), pos, 0
            if len(buf) < HEADER_SIZE:
                yield False, pos, size, "short header"
                return
        m, n, crc = unpack_from(buf, rel)
        end = pos + n + OVERHEAD
        if m != magic:
            reason = f"bad magic {bytes(m)!r}"
        elif end > size:
            reason = f"short frame: needs {n + OVERHEAD} bytes, {size - pos} present"
        elif big is not False and n > bigframe.BIG:  # (an empty dict, a cache, counts)
            item = _big_frame(fd, pos, n, crc, big)
            if item is not None:
                yield True, pos, end, item
                pos, buf, base = end, b"", end
                continue
            reason = _big_reason(fd, pos, n, crc)
        else:  # the hot path: one slice of each kind per frame
            e = end - base
            if e > len(buf):
                buf = os.pread(fd, max(chunk, end - pos), pos)
                mv, base, rel, e = memoryview(buf), pos, 0, end - pos
            lenb = buf[rel + 4:rel + 8]
            if buf[e - 4:e] == lenb:
                payload = mv[rel + HEADER_SIZE:e - 4]
                if _crc32(payload, _crc32(lenb)) == crc:
                    yield True, pos, end, payload
                    pos = end
                    continue
            reason = _reason(buf, rel, magic, end - pos)
        nxt = next_frame(fd, magic, pos + 1, size) if resync else None
        yield False, pos, size if nxt is None else nxt, reason
        if nxt is None:
            return
        pos, buf, base = nxt, b"", nxt


def _reason(buf, rel: int, magic: bytes, need: int) -> str:
    """Why the frame at ``buf[rel:]`` (with its magic, inside the range) is
    not valid, in :func:`format.check_frame`'s words."""
    if len(buf) - rel < need:
        return f"short frame: needs {need} bytes, {len(buf) - rel} present (the file ends before)"
    try:
        check_frame(buf, rel, magic)
    except FrameError as e:
        return str(e)
    return "not a valid frame"  # pragma: no cover - the caller saw it fail


def _big_frame(fd: int, pos: int, n: int, crc: int, big):
    """The BigPayload of the big frame at ``pos`` if it checks out (once per
    offset when ``big`` is a dict), else None."""
    marks = big.get(pos) if isinstance(big, dict) else None
    if marks is None:
        try:
            bigframe.check_big(fd, pos, n, crc)
        except FrameError:
            return None
        marks = []
        if isinstance(big, dict):
            if len(big) >= 256:
                big.clear()
            big[pos] = marks
    return bigframe.BigPayload(fd, pos, n, marks)


def _big_reason(fd: int, pos: int, n: int, crc: int) -> str:
    try:
        bigframe.check_big(fd, pos, n, crc)
    except FrameError as e:
        return str(e)
    return "not a valid frame"  # pragma: no cover - changed under us


def iter_frames(fd: int, start: int, end: int, magic: bytes, big: dict | None = None):
    """Yield (offset, payload) for the frames in ``[start, end)``.

    ``end`` must be a frame boundary known to be committed; an invalid frame
    before it is damage and raises FrameError (with ``.offset`` set).
    ``big``: as for :func:`walk` (a dict kept by the caller for this file).
    """
    for ok, off, _end, x in walk(fd, magic, end, start, CHUNK,
                                 False if big is None else big, resync=False):
        if not ok:
            raise damage_at(off, x, end)
        yield off, x


def frame_batches(fd: int, start: int, end: int, magic: bytes, big: dict | None = None,
                  chunk: int = CHUNK):
    """:func:`iter_frames` a buffer at a time, for whole-file rewrites
    (compaction): yield ``(buf, base, spans)``, where ``buf`` is bytes read
    at file offset ``base`` and ``spans`` the ``(offset, end)`` of the valid
    frames it holds whole, in order.  The payload of a span is
    ``buf[offset - base + HEADER_SIZE:end - base - TRAILER_SIZE]``.

    Why: a rewrite handles frames by the ten thousand, and a generator step
    per frame, the payload's memoryview and a second read of the same bytes
    to copy them cost it more than the checks.  Here one loop checks every
    frame of a buffer (magic, both lengths, CRC) and the caller slices and
    copies from the buffer it was given.  Anything else (a big frame, a
    frame longer than the buffer, bad bytes) is handed to :func:`walk` for
    that one frame, so what counts as a frame and what damage raises are
    :func:`walk`'s and :func:`iter_frames`' (FrameError with ``.offset``,
    after the valid frames before it were yielded).  A big frame comes as a
    batch of its own with ``buf`` None and ``base`` its ``BigPayload``.
    """
    unpack_from = HEADER.unpack_from
    crc32 = _crc32
    limit = bigframe.BIG
    pos = start
    n = 0
    while pos < end:
        buf = os.pread(fd, min(chunk, end - pos), pos)
        mv = memoryview(buf)
        have = len(buf)
        rel = 0
        spans = []
        while have - rel >= HEADER_SIZE:
            m, n, crc = unpack_from(buf, rel)
            e = rel + n + OVERHEAD
            if m != magic or e > have or n > limit:
                break
            lenb = buf[rel + 4:rel + 8]
            if buf[e - 4:e] != lenb or crc32(mv[rel + HEADER_SIZE:e - 4], crc32(lenb)) != crc:
                break
            spans.append((pos + rel, pos + e))
            rel = e
        if spans:
            yield buf, pos, spans
            pos += rel
            continue
        # not the plain case at pos: walk says what it is (one frame)
        for ok, off, fend, x in walk(fd, magic, end, pos, max(chunk, n + OVERHEAD),
                                     False if big is None else big, resync=False):
            if not ok:
                raise damage_at(off, x, end)
            if isinstance(x, bigframe.BigPayload):
                yield None, x, [(off, fend)]
            else:  # a plain frame longer than the buffer: walk read it whole
                yield x.obj, off, [(off, fend)]
            pos = fend
            break
        else:  # pragma: no cover - walk yields at least one item before end
            return


def damage_at(offset: int, reason: str, end: int) -> FrameError:
    """The FrameError for a bad frame inside committed bytes (``.offset`` set)."""
    if is_short(reason):
        reason = f"{reason}; the committed data runs to {end}"
    err = FrameError(reason)
    err.offset = offset
    return err


@dataclass
class ScanResult:
    """Where the valid frames of a file end, and why they end there."""

    end: int  #: offset just past the last valid frame
    count: int  #: valid frames seen
    status: str  #: "eof", "short" (incomplete frame at the end) or "damaged"
    reason: str = ""  #: what is wrong at ``end`` when status is not "eof"
    file_size: int = 0


def scan(fd: int, start: int, magic: bytes) -> ScanResult:
    """Walk the frames from ``start`` to the end of the file and report where
    the valid ones stop.  Used by recovery, verify and repair; never raises
    for bad data."""
    size = file_size(fd)
    pos, count = start, 0
    for ok, off, end, x in walk(fd, magic, size, start, CHUNK, True, resync=False):
        if not ok:
            return ScanResult(off, count, *end_status(fd, off, size, magic, x), size)
        count += 1
        pos = end
    return ScanResult(pos, count, "eof", "", size)


def end_status(fd: int, pos: int, size: int, magic: bytes, reason: str) -> tuple[str, str]:
    """(status, reason) of the bad bytes at ``pos`` that end a file of
    ``size`` bytes (:func:`walk`'s ``reason`` for them): "short" when the
    file ends inside a frame, else "damaged"."""
    if not is_short(reason):
        return "damaged", reason
    if _whole_but_for_length(fd, pos, size, magic):
        return "damaged", ("a complete frame whose length field is damaged (its trailer "
                           f"and checksum agree on {size - pos - OVERHEAD} bytes)")
    return "short", reason


def _whole_but_for_length(fd: int, pos: int, size: int, magic: bytes) -> bool:
    """Is ``[pos, size)`` one complete frame whose header length alone was
    damaged?  A torn write cannot look like this (the trailer is written
    last and the checksum covers the true length), so such a frame is an
    intact record, never a torn tail to cut."""
    n = size - pos - OVERHEAD
    if n < 0 or os.pread(fd, TRAILER_SIZE, size - TRAILER_SIZE) != n.to_bytes(4, "big"):
        return False
    data = os.pread(fd, size - pos, pos)
    if len(data) != size - pos or data[:4] != magic:
        return False
    fixed = data[:4] + n.to_bytes(4, "big") + data[8:]
    try:
        check_frame(fixed, 0, magic)
    except FrameError:
        return False
    return True


# --- one frame ------------------------------------------------------------------

def read_frame(fd: int, offset: int, magic: bytes, size_hint: int = 4096):
    """Return (payload_bytes, end_offset) of the frame at ``offset``.

    ``offset`` may come from an untrusted index: a negative or absurdly
    large one is a FrameError (past the end of the file, the read comes
    back short: a FrameError too), never OverflowError or EINVAL."""
    if not 0 <= offset <= MAX_OFFSET:
        raise FrameError(f"offset {offset} is not inside the file")
    data = os.pread(fd, size_hint, offset)
    if len(data) >= HEADER_SIZE:
        n = int.from_bytes(data[4:8], "big")
        if n + OVERHEAD > len(data) and data[:4] == magic:
            data = os.pread(fd, n + OVERHEAD, offset)
    payload, end = check_frame(data, 0, magic)
    return bytes(payload), offset + end


def read_head(fd: int, offset: int, magic: bytes) -> tuple[bytes, int]:
    """(payload, end) of the valid frame at ``offset``, like
    :func:`read_frame`, except that for a big frame only the first
    ``bigframe.PREFIX`` bytes of its payload are returned (after the whole
    frame has been checked a chunk at a time).  For decoding a batch's head."""
    if not 0 <= offset <= MAX_OFFSET:
        raise FrameError(f"offset {offset} is not inside the file")
    head = os.pread(fd, HEADER_SIZE, offset)
    if len(head) == HEADER_SIZE:
        m, n, crc = HEADER.unpack(head)
        if m == magic and n > bigframe.BIG:
            end = bigframe.check_big(fd, offset, n, crc)
            return os.pread(fd, min(bigframe.PREFIX, n), offset + HEADER_SIZE), end
    return read_frame(fd, offset, magic)


def frame_at(fd: int, magic: bytes, offset: int, size: int, head: bool = False):
    """The payload (bytes) of the valid frame at ``offset`` that ends by
    ``size``, or None.  ``offset`` may come from a damaged index: anything
    is allowed.  ``head``: of a big frame, only the first bytes
    (``bigframe.PREFIX``), after checking the whole frame a chunk at a time."""
    if not 0 <= offset <= size - OVERHEAD:
        return None
    try:
        payload, end = (read_head if head else read_frame)(fd, offset, magic)
    except FrameError:
        return None
    return payload if end <= size else None


def frame_before(fd: int, end: int, magic: bytes, floor: int = 0, head: bool = False):
    """Return (offset, payload_bytes) of the frame that ends at ``end``.
    ``head``: of a big frame, only the start of the payload (:func:`read_head`)."""
    if end - floor < OVERHEAD:
        raise FrameError("no frame before this offset")
    (n,) = TRAILER.unpack(os.pread(fd, TRAILER_SIZE, end - TRAILER_SIZE))
    start = end - n - OVERHEAD
    if start < floor:
        raise FrameError("trailer points before the start of the file")
    if head:
        payload, fend = read_head(fd, start, magic)
    else:
        payload, fend = read_frame(fd, start, magic, n + OVERHEAD)
    if fend != end:
        raise FrameError("frame does not end where its trailer is")
    return start, payload


def next_frame(fd: int, magic: bytes, start: int, size: int | None = None,
               chunk: int = SCAN_CHUNK) -> int | None:
    """Offset of the first valid frame starting at or after ``start`` (and
    ending by ``size``, the file's size when None), or None.

    Resynchronises :func:`walk`, and lets recovery tell a torn tail (nothing
    valid after it) from damage in the middle of a file (valid frames
    follow), which must never be cut silently.  The frame's magic, both
    lengths and its CRC must agree, so stray magic bytes in event data do
    not fool it; a big frame is checked a chunk at a time."""
    if size is None:
        size = file_size(fd)
    pos = start
    while pos < size:
        data = os.pread(fd, min(chunk + HEADER_SIZE, size - pos), pos)
        i = data.find(magic)
        while i != -1:
            if frame_at(fd, magic, pos + i, size, head=True) is not None:
                return pos + i
            i = data.find(magic, i + 1)
        if len(data) <= HEADER_SIZE:
            return None
        pos += len(data) - HEADER_SIZE + 1
    return None


# --- torn tails -----------------------------------------------------------------

#: The unit a device writes atomically (at least); pages are whole sectors.
SECTOR = 512
ZERO_SECTOR = bytes(SECTOR)


def torn_by_power_cut(fd: int, pos: int, magic: bytes) -> bool:
    """Do the bytes from ``pos`` to the end look like a write that a power
    cut interrupted, rather than damage to a frame that was once whole?

    One ``write`` of a frame reaches the disk page by page, in any order, and
    the file's size may be extended before its data: a power cut leaves pages
    of zeros where the frame's start or its end should be.  A frame that was
    fsynced does not lose pages that way, and damage to one (a flipped bit)
    does not turn its magic, its trailing length or a whole sector into
    zeros.  So: the magic is four zero bytes, or a sector boundary cuts the
    header and the piece past it (or before it) is zeros where a whole frame
    has a byte that is never zero, or the header is intact and the trailing
    length where the header says the frame ends is zero (or missing), or a
    whole 512-byte sector inside the frame is zeros.  (A frame
    whose payload holds 512 aligned zero bytes *and* a flipped bit would be
    taken for torn; its bytes are kept in quarantine/ all the same.)
    """
    data = os.pread(fd, file_size(fd) - pos, pos)  # one frame: the end of the file
    if data[:4] == b"\0\0\0\0":
        return True
    # A sector boundary may cut the header: the piece of the frame on one
    # side of it landed, the other is still zeros.  No whole frame has a zero
    # byte in its magic or as the first byte of its payload (a msgpack
    # array's header), so such a byte in a piece that is zeros throughout
    # is a piece that never landed (also when it cut the length field, whose
    # piece runs on into the payload).
    for i in (0, 1, 2, 3, HEADER_SIZE):
        if i < len(data) and data[i] == 0 and _piece_is_zeros(data, pos, i):
            return True
    if len(data) < HEADER_SIZE or data[:4] != magic:
        return False
    end = HEADER_SIZE + int.from_bytes(data[4:8], "big") + TRAILER_SIZE
    if end > len(data) or data[end - TRAILER_SIZE:end] == b"\0\0\0\0":
        return True  # the file ends inside the frame, or its last bytes never landed
    # a sector in the middle that never landed (still zeros past the old end)
    first = -pos % SECTOR  # the first sector boundary, relative to pos
    return any(data[at:at + SECTOR] == ZERO_SECTOR for at in range(first, end - SECTOR + 1, SECTOR))


def _piece_is_zeros(data: bytes, pos: int, i: int) -> bool:
    """Is the piece of ``data`` (the file from offset ``pos``) that shares a
    sector with its byte ``i`` all zeros?  A device writes a sector whole or
    not at all, so a sector of an append that never landed holds zeros."""
    start = pos + i - (pos + i) % SECTOR - pos  # i's sector, relative to pos
    return not any(data[max(start, 0):min(start + SECTOR, len(data))])


def tail_is_torn(status: str, rebooted: bool, fd: int, pos: int, magic: bytes) -> bool:
    """Is the end of a file after its last valid frame (:func:`scan`'s
    ``status`` at ``pos``) an append that never completed, which a writer
    cuts by itself?  A killed process leaves a *short* frame; a power cut
    (only after a reboot) pages of zeros (:func:`torn_by_power_cut`).
    Anything else may be an acknowledged batch that was damaged: never cut.
    Writers decide with it, and verify says what they would do."""
    if status == "short":
        return True
    return status == "damaged" and rebooted and torn_by_power_cut(fd, pos, magic)
