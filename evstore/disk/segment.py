"""One segment file: frames appended at the end, read both ways.

A segment knows nothing of streams or positions; it only moves frames
(:mod:`evstore.disk.format`) between memory and a file.  Writing goes through
:meth:`SegmentWriter.append` and :meth:`SegmentWriter.sync`; the latter is the
single place where evstore calls ``fdatasync``/``fsync`` on segment data, so
crash tests can replace it (see ``tests/torture``).
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from ..errors import CorruptStore
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

CHUNK = 1 << 20

#: No frame starts this far into a file; a larger offset (from a damaged
#: ``.idx`` entry) would make ``pread`` raise OverflowError or EINVAL.
MAX_OFFSET = 1 << 56

_fdatasync = getattr(os, "fdatasync", os.fsync)

#: Files inside the store are opened without following a symbolic link in
#: their last component (a link planted there would redirect writes).
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _link_error(path: str) -> CorruptStore:
    return CorruptStore(
        f"{path} is a symbolic link; evstore does not follow links inside the store")


def open_file(path: str, flags: int, mode: int = 0o666) -> int:
    """``os.open`` for a file inside the store: never through a symbolic
    link.  A link is damage to the store (CorruptStore naming the path);
    other errors (FileNotFoundError, ...) are raised as they are."""
    try:
        return os.open(path, flags | O_NOFOLLOW, mode)
    except OSError as e:
        # Linux says ELOOP, FreeBSD EMLINK
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and os.path.islink(path)):
            raise _link_error(path) from None
        raise


def nofollow(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open`: :func:`open_file`'s refusal of links."""
    return open_file(path, flags)


def check_not_link(path: str) -> bool:
    """Refuse a directory inside the store that is a symbolic link
    (CorruptStore).  True if ``path`` exists, False if it does not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path)
    return True


def stable_listdir(path: str) -> list[str]:
    """The names in a directory that another process may be adding files to.

    POSIX leaves it unspecified whether one ``readdir`` pass returns an entry
    created while it runs, and with hashed directories (ext4) a pass can
    return a segment created late in it yet miss one created just before:
    a hole a reader would take for lost data.  Segments are only ever added,
    so two passes that agree prove the set has no such hole: every entry the
    second pass could have missed was created after the first one ended,
    and the first pass would then differ from it.
    """
    names = sorted(listdir(path))
    while True:
        again = sorted(os.listdir(path))
        if again == names:
            return names
        names = again


def listdir(path: str) -> list[str]:
    """``os.listdir`` of a directory inside the store, never through a link
    (CorruptStore); FileNotFoundError and NotADirectoryError as they are."""
    check_not_link(path)
    return os.listdir(path)


def is_dir(path: str) -> bool:
    """A real directory, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def walk(top: str):
    """``os.walk`` of a directory inside the store: nothing when ``top`` is
    a link, and (as ``os.walk`` does by default) never into a link below it.
    Links below it are listed among the files or directories as they are:
    whoever opens one opens it with :func:`open_file`."""
    try:
        if stat.S_ISLNK(os.lstat(top).st_mode):
            return
    except OSError:
        return
    yield from os.walk(top)


def read_small(path: str, limit: int = 4096) -> bytes:
    """The first ``limit`` bytes of a small regular file inside the store,
    never through a link (CorruptStore) and never from a FIFO or device
    (OSError)."""
    fd = open_file(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        return os.pread(fd, limit, 0)
    finally:
        os.close(fd)


def fsync_file(fd: int) -> None:
    """Flush a file's data to stable storage.  The fsync seam of evstore."""
    _fdatasync(fd)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (newly created files) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as e:  # pragma: no cover - e.g. EINVAL on some file systems
        if e.errno not in (22,):
            raise
    finally:
        os.close(fd)


class SegmentWriter:
    """Appends frames to one segment file.  Only the lock holder uses one."""

    def __init__(self, path: str):
        self.path = path
        self.fd = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.size = os.fstat(self.fd).st_size

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; return the offset it starts at."""
        offset = self.size
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size = offset + len(data)
        return offset

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def sync(self) -> None:
        fsync_file(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class ScanResult:
    """Where the valid frames of a file end, and why they end there."""

    end: int  #: offset just past the last valid frame
    count: int  #: valid frames seen
    status: str  #: "eof", "short" (incomplete frame at the end) or "damaged"
    reason: str = ""  #: what is wrong at ``end`` when status is not "eof"
    file_size: int = 0


def file_size(fd: int) -> int:
    return os.fstat(fd).st_size


def iter_frames(fd: int, start: int, end: int, magic: bytes, big: dict | None = None):
    """Yield (offset, payload) for the frames in ``[start, end)``.

    ``end`` must be a frame boundary known to be committed; an invalid frame
    before it is damage and raises FrameError (with ``.offset`` set).
    Reads in large chunks so that a long stream costs few system calls.

    With ``big`` (a dict kept by the caller for this file), a frame whose
    payload is over ``bigframe.BIG`` bytes is checked a chunk at a time and
    yielded as a ``bigframe.BigPayload`` left in the file; ``big`` remembers
    the frames already checked (offset -> the payload's shared marks).
    """
    pos = start
    buf = b""
    base = start  # file offset of buf[0]
    while pos < end:
        rel = pos - base
        if big is not None and len(buf) - rel >= HEADER_SIZE and buf[rel:rel + 4] == magic:
            need = int.from_bytes(buf[rel + 4 : rel + 8], "big") + OVERHEAD
            if need - OVERHEAD > bigframe.BIG:
                if need > end - pos:
                    err = FrameError(f"frame of {need} bytes runs past the committed end {end}")
                    err.offset = pos
                    raise err
                yield pos, _big_payload(fd, buf, rel, pos, magic, big)
                pos, buf, base = pos + need, b"", pos + need
                continue
        try:
            payload, fend = check_frame(buf, rel, magic)
        except FrameError as e:
            if not is_short(e):
                e.offset = pos
                raise
            # Need more bytes: read at least the whole frame, at least a chunk.
            need = HEADER_SIZE
            if len(buf) - rel >= HEADER_SIZE:
                need = int.from_bytes(buf[rel + 4 : rel + 8], "big") + OVERHEAD
            if need > end - pos:
                err = FrameError(f"frame of {need} bytes runs past the committed end {end}")
                err.offset = pos
                raise err
            want = min(max(need, CHUNK), end - pos)
            data = os.pread(fd, want, pos)
            if len(data) < min(need, end - pos):
                err = FrameError(
                    f"short frame: file ends at {pos + len(data)}, committed data runs to {end}"
                )
                err.offset = pos
                raise err
            buf, base = data, pos
            continue
        yield pos, payload
        pos = base + fend


def _big_payload(fd: int, buf, rel: int, pos: int, magic: bytes, big: dict):
    """iter_frames' big frame at ``pos`` (its header at ``buf[rel:]``)."""
    m, n, crc = HEADER.unpack_from(buf, rel)
    if m != magic:
        err = FrameError(f"bad magic {bytes(m)!r}")
        err.offset = pos
        raise err
    marks = big.get(pos)
    if marks is None:
        try:
            bigframe.check_big(fd, pos, n, crc)
        except FrameError as e:
            e.offset = pos
            raise
        if len(big) >= 256:
            big.clear()
        marks = big[pos] = []
    return bigframe.BigPayload(fd, pos, n, marks)


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


def frame_before(fd: int, end: int, magic: bytes, floor: int = 0, head: bool = False):
    """Return (offset, payload_bytes) of the frame that ends at ``end``.
    ``head``: of a big frame, only the start of the payload (bigframe.read_head)."""
    if end - floor < OVERHEAD:
        raise FrameError("no frame before this offset")
    (n,) = TRAILER.unpack(os.pread(fd, TRAILER_SIZE, end - TRAILER_SIZE))
    start = end - n - OVERHEAD
    if start < floor:
        raise FrameError("trailer points before the start of the file")
    if head:
        payload, fend = bigframe.read_head(fd, start, magic)
    else:
        payload, fend = read_frame(fd, start, magic, n + OVERHEAD)
    if fend != end:
        raise FrameError("frame does not end where its trailer is")
    return start, payload


def scan(fd: int, start: int, magic: bytes) -> ScanResult:
    """Walk the frames from ``start`` to the end of the file and report where
    the valid ones stop.  Used by recovery, verify and repair; never raises
    for bad data."""
    size = file_size(fd)
    pos, count = start, 0
    buf, base = b"", start
    while pos < size:
        rel = pos - base
        try:
            _, fend = check_frame(buf, rel, magic)
        except FrameError as e:
            if not is_short(e) or len(buf) - rel >= size - pos:
                if not is_short(e):
                    return ScanResult(pos, count, "damaged", str(e), size)
                return _short_end(fd, pos, count, size, magic, str(e))
            need = HEADER_SIZE
            if len(buf) - rel >= HEADER_SIZE:
                need = int.from_bytes(buf[rel + 4 : rel + 8], "big") + OVERHEAD
                if need - OVERHEAD > bigframe.BIG and pos + need <= size:
                    # a big frame: checked a chunk at a time, never read whole
                    try:
                        bigframe.check_big(fd, pos, need - OVERHEAD,
                                           HEADER.unpack_from(buf, rel)[2])
                    except FrameError as e2:
                        return ScanResult(pos, count, "damaged", str(e2), size)
                    count += 1
                    pos = base = pos + need
                    buf = b""
                    continue
                if need - OVERHEAD > bigframe.BIG:  # a big frame the file ends inside
                    return _short_end(fd, pos, count, size, magic,
                                      f"short frame: needs {need} bytes, {size - pos} present")
            buf = os.pread(fd, min(max(need, CHUNK), size - pos), pos)
            base = pos
            continue
        count += 1
        pos = base + fend
    return ScanResult(pos, count, "eof", "", size)


def _short_end(fd: int, pos: int, count: int, size: int, magic: bytes, reason: str):
    """scan's result when the file ends inside the frame at ``pos``."""
    if _whole_but_for_length(fd, pos, size, magic):
        return ScanResult(pos, count, "damaged", (
            "a complete frame whose length field is damaged (its trailer "
            f"and checksum agree on {size - pos - OVERHEAD} bytes)"), size)
    return ScanResult(pos, count, "short", reason, size)


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
    zeros.  So: the magic is four zero bytes, or the header is intact and the
    trailing length where the header says the frame ends is zero (or
    missing), or a whole 512-byte sector inside the frame is zeros.  (A frame
    whose payload holds 512 aligned zero bytes *and* a flipped bit would be
    taken for torn; its bytes are kept in quarantine/ all the same.)
    """
    data = os.pread(fd, file_size(fd) - pos, pos)  # one frame: the end of the file
    if data[:4] == b"\0\0\0\0":
        return True
    if len(data) < HEADER_SIZE or data[:4] != magic:
        return False
    end = HEADER_SIZE + int.from_bytes(data[4:8], "big") + TRAILER_SIZE
    if end > len(data) or data[end - TRAILER_SIZE:end] == b"\0\0\0\0":
        return True  # the file ends inside the frame, or its last bytes never landed
    # a sector in the middle that never landed (still zeros past the old end)
    first = -pos % SECTOR  # the first sector boundary, relative to pos
    return any(data[at:at + SECTOR] == ZERO_SECTOR for at in range(first, end - SECTOR + 1, SECTOR))


def find_next_frame(fd: int, start: int, magic: bytes) -> int | None:
    """Offset of the first valid frame at or after ``start``, or None.

    Lets recovery tell a torn tail (nothing valid after it) from damage in the
    middle of a file (valid frames follow), which must never be cut silently.
    """
    size = file_size(fd)
    pos = start
    while pos < size:
        data = os.pread(fd, min(CHUNK + HEADER_SIZE, size - pos), pos)
        i = data.find(magic)
        while i != -1:
            try:
                read_frame(fd, pos + i, magic)
                return pos + i
            except FrameError:
                pass
            i = data.find(magic, i + 1)
        if len(data) <= HEADER_SIZE:
            break
        pos += len(data) - HEADER_SIZE
    return None
