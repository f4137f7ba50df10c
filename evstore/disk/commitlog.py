"""The commit log: the store's single source of truth and its ``$all`` order.

``log/`` holds segments named by the first position they contain
(``0000000000000001.log``), each a run of batch frames (:mod:`evstore.disk.format`)
with an offset index beside it (``.idx``, one entry per position).  An append
is committed exactly when its frame is complete and valid in the log; a frame
is the whole batch, so a batch is all-or-nothing by construction.

Readers find the head (last committed position) by validating the last index
entry and walking any newer frames; they never take the writer lock and stop
at the first incomplete frame, which is a batch still being written.
"""
from __future__ import annotations

import bisect
import os

from ..plain import dataclass  # not dataclasses: start-up time (see there)
from ..errors import CorruptStore
from .format import LOG_MAGIC, FrameError
from .index import OffsetIndex
from .bigframe import decode, decode_head
from .frames import (
    CHUNK,
    damage_at,
    file_size,
    frame_before,
    iter_frames,
    next_frame,
    read_frame,
    read_head,
    scan,
    tail_is_torn,
    walk,
)
from .records import LogBatch, decode_batch, decode_batch_head
from .segment import SegmentWriter, check_not_link, open_file, stable_listdir

from ..backends.files.names import LOG_IDX as IDX_SUFFIX, LOG_SEG as SEG_SUFFIX  # noqa: E402


class SealSyncError(OSError):
    """Syncing a segment being rolled past failed: its committed frames may
    not be on disk (the store treats it as a failed fsync)."""


def seg_name(first: int) -> str:
    return f"{first:016d}{SEG_SUFFIX}"


@dataclass
class Tail:
    """The committed end of the log as last observed."""

    head: int = 0  #: last committed position (0: empty)
    seg_first: int = 1  #: first position of the last segment
    end: int = 0  #: offset just past the last committed frame in that segment
    last_recorded_us: int = 0
    #: what follows ``end`` when it is not clean: "", "short" or "damaged"
    trailing: str = ""
    trailing_reason: str = ""


class CommitLog:
    """Read access to ``log/``, plus the appends the writer makes under the lock."""

    def __init__(self, directory: str):
        self.dir = directory
        self._firsts: list[int] = []
        self._fds: dict[int, int] = {}
        self._idx: dict[int, OffsetIndex] = {}
        self.tail = Tail()
        self._writer: SegmentWriter | None = None
        self._widx: OffsetIndex | None = None
        self._heads: dict[tuple[int, int], tuple] = {}
        #: big frames already checked, per segment (frames.walk)
        self._big: dict[int, dict] = {}
        self._dir_ok = False

    # -- files ---------------------------------------------------------------
    def path(self, first: int, suffix: str = SEG_SUFFIX) -> str:
        return os.path.join(self.dir, f"{first:016d}{suffix}")

    def list_segments(self) -> list[int]:
        if not self._dir_ok:
            check_not_link(self.dir)  # once per handle: log/ itself may not be a link
            self._dir_ok = True
        firsts = []
        for name in stable_listdir(self.dir):
            if name.endswith(SEG_SUFFIX) and len(name) == 16 + len(SEG_SUFFIX):
                stem = name[:16]
                if stem.isdigit():
                    firsts.append(int(stem))
        firsts.sort()
        self._firsts = firsts
        return firsts

    def fd(self, first: int) -> int:
        fd = self._fds.get(first)
        if fd is None:
            fd = open_file(self.path(first), os.O_RDONLY)
            self._fds[first] = fd
        return fd

    def index(self, first: int) -> OffsetIndex:
        idx = self._idx.get(first)
        if idx is None:
            path = self.path(first, IDX_SUFFIX)
            if not os.path.exists(path):
                # A reader must not create files; an empty in-memory stand-in
                # makes every lookup fall back to scanning.
                return _EMPTY_INDEX
            idx = OffsetIndex(path)
            self._idx[first] = idx
        return idx

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown, fds already gone
            pass

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        for idx in self._idx.values():
            idx.close()
        self._idx.clear()
        self._big.clear()
        if self._writer:
            self._writer.close()
            self._writer = None
        if self._widx:
            self._widx.close()
            self._widx = None

    # -- finding the head -----------------------------------------------------------
    def refresh(self) -> Tail:
        """Bring ``self.tail`` up to date with what writers have committed."""
        t = self.tail
        if not self._firsts:
            if not self.list_segments():
                return t
            t.seg_first = self._firsts[-1]
            self._locate_tail(t)
        while True:
            fd = self.fd(t.seg_first)
            size = file_size(fd)
            if size > t.end:
                self._walk(t, fd)
            nxt = t.head + 1
            if t.end == size and nxt > t.seg_first and os.path.exists(self.path(nxt)):
                self._firsts.append(nxt)
                t.seg_first, t.end, t.trailing = nxt, 0, ""
                continue
            return t

    def _locate_tail(self, t: Tail) -> None:
        """Start the walk at the last index entry that checks out."""
        first = t.seg_first
        t.head, t.end = first - 1, 0
        fd = self.fd(first)
        idx = self.index(first)
        n = len(idx)
        # Try the last entry, then fall back to the start of the segment.
        for i in (n - 1,):
            if i < 0:
                break
            off = idx.get(i)
            try:
                payload, end = read_head(fd, off, LOG_MAGIC)
                b = decode_batch_head(payload)
            except (FrameError, ValueError, Exception):
                break
            if b[2] <= first + i <= b[2] + b[4] - 1:
                t.head, t.end, t.last_recorded_us = b[2] + b[4] - 1, end, b[3]
                return
        if first > 1 and not t.last_recorded_us:
            t.last_recorded_us = self._last_us_before(first)

    def _last_us_before(self, first: int) -> int:
        i = bisect.bisect_left(self._firsts, first) - 1
        if i < 0:
            return 0
        prev = self._firsts[i]
        fd = self.fd(prev)
        try:
            _, payload = frame_before(fd, file_size(fd), LOG_MAGIC, head=True)
            return decode_batch_head(payload)[3]
        except (FrameError, ValueError):
            return 0

    def _walk(self, t: Tail, fd: int) -> None:
        r = scan(fd, t.end, LOG_MAGIC)
        if r.end > t.end:
            off, payload = frame_before(fd, r.end, LOG_MAGIC, t.end, head=True)
            stream, fv, fp, us, n = self._decode(decode_batch_head, payload, t.seg_first, off)
            t.head, t.last_recorded_us = fp + n - 1, us
            t.end = r.end
        t.trailing, t.trailing_reason = ("" if r.status == "eof" else r.status), r.reason
        if r.status == "damaged":
            # Damage with intact frames after it is not a torn tail.
            if next_frame(fd, LOG_MAGIC, r.end + 1) is not None:
                raise CorruptStore(
                    f"commit log {self.path(t.seg_first)}: damaged frame at offset "
                    f"{r.end} ({r.reason}) with intact data after it; "
                    "run 'evstore verify' for a report and 'evstore repair' to fix it"
                )

    def tail_is_torn(self, rebooted: bool) -> bool:
        """Are the bytes after the committed end an append that never
        completed (frames.tail_is_torn: the rule verify applies too)?  Asked
        only by a writer, so readers refreshing the tail never pay for it."""
        t = self.tail
        return bool(t.trailing) and tail_is_torn(
            t.trailing, rebooted, self.fd(t.seg_first), t.end, LOG_MAGIC)

    # -- lookups --------------------------------------------------------------------
    def segment_for(self, position: int) -> int:
        i = bisect.bisect_right(self._firsts, position) - 1
        if i < 0:
            raise KeyError(position)
        return self._firsts[i]

    def locate(self, position: int) -> tuple[int, int]:
        """(segment first, frame offset) of the frame holding ``position``."""
        first = self.segment_for(position)
        fd = self.fd(first)
        off = self.index(first).get(position - first)
        if off is not None:
            try:
                _, _, fp, _, n = self._head_at(first, off)
                if fp <= position < fp + n:
                    return first, off
            except (FrameError, ValueError):
                pass
        # The index is short (a writer is mid-append) or stale: walk frames,
        # from the last entry before ``position`` that checks out (usually
        # the previous batch) rather than from the start of the segment.
        end = self.tail.end if first == self.tail.seg_first else file_size(fd)
        start = 0
        idx = self.index(first)
        n = min(len(idx), position - first)
        if n > 0:
            o = idx.get(n - 1)
            try:
                payload, _ = read_head(fd, o, LOG_MAGIC)
                _, _, fp, _, cnt = decode_batch_head(payload)
                if fp <= first + n - 1 < fp + cnt:
                    start = o
            except (FrameError, ValueError):
                pass
        for off, payload in self._frames(first, fd, start, end):
            head = self._decode(decode_head, payload, first, off)
            _, _, fp, _, n = head
            if fp <= position < fp + n:
                self._remember(first, off, head)
                return first, off
        raise CorruptStore(f"commit log: position {position} not found in {self.path(first)}")

    def _frames(self, first: int, fd: int, start: int, end: int):
        """iter_frames over committed bytes, where any invalid frame is damage.
        Big frames come as bigframe.BigPayload: decode them with
        bigframe.decode or decode_head."""
        for ok, off, _end, x in walk(fd, LOG_MAGIC, end, start, CHUNK,
                                     self._big.setdefault(first, {}), resync=False):
            if not ok:
                e = damage_at(off, x, end)
                raise CorruptStore(
                    f"commit log {self.path(first)}: damaged frame at offset "
                    f"{off}: {e}; run 'evstore verify' for a report and "
                    "'evstore repair' to fix it") from None
            yield off, x

    def _decode(self, decode, payload, first: int, off: int):
        """Decode a committed frame's payload; one that is not a batch (its
        CRC notwithstanding) is damage, reported with its file and offset."""
        try:
            return decode(payload)
        except ValueError as e:
            raise CorruptStore(
                f"commit log {self.path(first)}: the frame at offset {off} is not a batch "
                f"({e}); run 'evstore verify' for a report and 'evstore repair' to fix it"
            ) from None

    def _head_at(self, first: int, off: int) -> tuple[str, int, int, int, int]:
        """The head of the valid frame at ``off``.  Committed frames never
        change under one CommitLog (repair replaces it, see EventStore's
        generation check), so checking a frame's CRC once is enough: commit
        checks ask for the same large batch again and again."""
        head = self._heads.get((first, off))
        if head is None:
            payload, _ = read_head(self.fd(first), off, LOG_MAGIC)
            head = decode_batch_head(payload)
            self._remember(first, off, head)
        return head

    def _remember(self, first: int, off: int, head) -> None:
        if len(self._heads) >= 4096:
            self._heads.clear()
        self._heads[(first, off)] = head

    def batch_at(self, position: int) -> LogBatch:
        first, off = self.locate(position)
        payload, _ = read_frame(self.fd(first), off, LOG_MAGIC)
        return decode_batch(payload)

    def head_of_batch(self, position: int) -> tuple[str, int, int, int, int]:
        first, off = self.locate(position)
        return self._head_at(first, off)

    def batches(self, from_position: int, to_position: int):
        """Yield the batches that hold positions ``from..to`` (inclusive), in order."""
        if from_position > to_position:
            return
        for b in self.decoded_from(from_position, decode):
            yield b
            if b.last_position >= to_position:
                return

    def batch_heads_from(self, from_position: int):
        """Yield (stream, first_version, first_position, us, count) of each
        batch from ``from_position`` to the head, decoding no event data."""
        if from_position > self.tail.head:
            return
        yield from self.decoded_from(from_position, decode_head)

    def decoded_from(self, from_position: int, decode):
        """``decode`` of each committed frame from the one holding
        ``from_position`` to the head (as of the last :meth:`refresh`),
        across segments.  ``decode`` gets the payload (a memoryview valid
        only during the call, or a bigframe.BigPayload for a huge batch)."""
        first, off = self.locate(from_position)
        i = self._firsts.index(first)
        while True:
            fd = self.fd(first)
            end = self.tail.end if first == self.tail.seg_first else file_size(fd)
            for o, payload in self._frames(first, fd, off, end):
                yield self._decode(decode, payload, first, o)
            i += 1
            if i >= len(self._firsts) or self._firsts[i] > self.tail.head:
                return
            first, off = self._firsts[i], 0

    # -- writing (lock holder only) ----------------------------------------------------
    def writer(self, segment_bytes: int) -> tuple[SegmentWriter, OffsetIndex, bool]:
        """The writer for the segment the next batch goes into; rolls to a new
        segment once the current one reaches ``segment_bytes``.  The flag says
        a file was created (its directory entry then needs an fsync)."""
        t = self.tail
        created = False
        if not self._firsts or (t.end >= segment_bytes and t.head >= t.seg_first):
            first = t.head + 1
            if self._firsts:
                self._seal(t)
            if self._writer:
                self._writer.close()
                self._widx.close()
            self._writer = SegmentWriter(self.path(first))
            self._widx = OffsetIndex(self.path(first, IDX_SUFFIX), writable=True)
            self._firsts.append(first)
            t.seg_first, t.end, t.trailing = first, 0, ""
            created = True
        elif self._writer is None or not self._writer.path.endswith(seg_name(t.seg_first)):
            if self._writer:
                self._writer.close()
                self._widx.close()
            self._writer = SegmentWriter(self.path(t.seg_first))
            self._widx = OffsetIndex(self.path(t.seg_first, IDX_SUFFIX), writable=True)
        return self._writer, self._widx, created

    def _seal(self, t) -> None:
        """Complete and sync the index of the segment being rolled past.

        The index of the last segment may lag its frames after a crash, and
        only the last segment's index is ever rebuilt by writers; a sealed
        segment's index must therefore be whole (and on disk) before a newer
        segment exists.
        """
        if self._widx is not None and self._writer is not None \
                and self._writer.path.endswith(seg_name(t.seg_first)):
            idx, own = self._widx, False
        else:
            idx, own = OffsetIndex(self.path(t.seg_first, IDX_SUFFIX), writable=True), True
        try:
            # The data first: an index synced ahead of its frames would,
            # after a power cut, point into a segment that lost them while
            # newer segments exist (also with --no-sync: one fsync per roll).
            try:
                if own or self._writer is None:
                    fd = open_file(self.path(t.seg_first), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                else:
                    self._writer.sync()
                self.reindex_tail(idx)
                idx.sync()
            except OSError as e:
                raise SealSyncError(e.errno, e.strerror, self.path(t.seg_first)) from e
        finally:
            if own:
                idx.close()

    def commit(self, frame: bytes, first_position: int, count: int, recorded_us: int,
               segment_bytes: int) -> bool:
        """Append a batch frame at the committed end.  Returns whether a new
        segment file was created.  The caller syncs."""
        w, idx, created = self.writer(segment_bytes)
        t = self.tail
        w.size = file_size(w.fd)  # other processes may have appended since our last write
        if w.size != t.end:  # never weld a frame onto bytes past the committed end
            raise CorruptStore(
                f"commit log {w.path}: {w.size - t.end} unexpected bytes after offset {t.end}"
            )
        if len(idx) != first_position - t.seg_first:
            # A crash between a frame and its index entries (or a lost
            # unsynced index tail) left the cache short or long: extending it
            # as is would leave a hole of zeroed entries.
            self.reindex_tail(idx)
        off = w.append(frame)
        # The batch is committed now: nothing after this line may fail it.
        t.head = first_position + count - 1
        t.end = w.size
        t.last_recorded_us = recorded_us
        try:
            idx.extend(first_position - t.seg_first, [off] * count)
        except OSError:
            pass  # a cache: left short, the next commit rebuilds it (reindex_tail)
        return created


    def reindex_tail(self, idx: OffsetIndex) -> None:
        """Make the last segment's index hold exactly one entry per committed
        position, rebuilding missing entries from the frames (the index is a
        cache of the data; see docs/FORMAT.md, "Indexes")."""
        t = self.tail
        want = max(t.head - t.seg_first + 1, 0)
        n = len(idx)
        if n >= want:
            if n > want:
                idx.truncate(want)
            return
        fd = self.fd(t.seg_first)
        # Resume from the last entry that checks out, else from the segment start.
        start, done = 0, 0
        if n:
            try:
                off = idx.get(n - 1)
                payload, _ = read_head(fd, off, LOG_MAGIC)
                _, _, fp, _, cnt = decode_batch_head(payload)
                if fp <= t.seg_first + n - 1 < fp + cnt:
                    start, done = off, fp - t.seg_first
            except (FrameError, ValueError):
                pass
        entries: list[int] = []
        for off, payload in iter_frames(fd, start, t.end, LOG_MAGIC,
                                        self._big.setdefault(t.seg_first, {})):
            _, _, fp, _, cnt = decode_head(payload)
            entries.extend([off] * cnt)
        idx.extend(done, entries)


class _EmptyIndex:
    def __len__(self):
        return 0

    def get(self, i):
        return None


_EMPTY_INDEX = _EmptyIndex()
