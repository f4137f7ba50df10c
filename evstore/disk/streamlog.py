"""Per-stream logs: each aggregate's events, in version order, on their own.

A stream's directory and its files are :mod:`evstore.disk.streamdir`'s; the
walks that find where its committed records end are
:mod:`evstore.disk.streamtail`'s.  Here: reading a stream's records by
version, and the writer's appends and cuts.

A stream log is a copy of what the commit log holds, laid out for reading one
aggregate fast.  It is trusted only as far as its last record agrees with the
commit log: records past that are leftovers of a batch that never committed
and are invisible to readers (and cut by the next writer).
"""
from __future__ import annotations

import bisect
import os

from ..backends.files.names import STREAM_IDX as IDX_SUFFIX
from ..errors import CorruptStore
from .format import STREAM_MAGIC, FrameError
from .frames import CHUNK, damage_at, file_size, iter_frames, read_frame, walk
from .index import OffsetIndex
from ..model import RecordedEvent, unpack, us_to_datetime
from .segment import SegmentWriter, nofollow
from .streamdir import StreamDir
from .streamtail import StreamTail, find_tail, recheck

#: A batch's stream records are written this many bytes at a time (at least one record).
WRITE_CHUNK = 1 << 20


class StaleTail(Exception):
    """The segment holds bytes past the tail the caller found: records of an
    append that never committed.  Internal: the store finds the tail again."""

    def __init__(self, path: str, end: int, size: int):
        super().__init__(f"{path}: {size - end} bytes after offset {end}")


class StreamLog(StreamDir):
    """One stream's records: read by version; appended and cut by the writer."""

    # -- the committed tail ----------------------------------------------------------
    def tail(self, is_committed, whole_batches: bool = True) -> StreamTail:
        """Find the last record that ``is_committed(version, position)`` accepts.

        Walks back from the physical end; everything after the accepted record
        is reported in ``cut_from``.  ``is_committed`` answers NOT_COMMITTED,
        COMMITTED (the last record of its batch) or INSIDE_BATCH.  Stream
        records are written before their commit frame and reconciled after a
        reboot, so a log ending inside a committed batch has lost records to
        damage: readers would see part of a batch and the next writer would
        reuse committed versions, hence CorruptStore unless ``whole_batches``
        is off (reconciliation and repair, which complete the batch).
        """
        for attempt in range(4):
            try:
                return find_tail(self, is_committed, whole_batches)
            except FileNotFoundError:
                # a compaction replaced a segment between the listing and
                # its open: list again (it changes a few files, once)
                self._drop_all_fds()
                if attempt == 3:
                    raise

    # -- reading ---------------------------------------------------------------------
    def _offset_of(self, first: int, version: int, end: int) -> int:
        fd = self.fd(first)
        off = self._index_get(first, version - first)
        if off is not None and off < end:
            try:
                payload, _ = read_frame(fd, off, STREAM_MAGIC)
                if unpack(payload)[0] == version:
                    return off
            except (FrameError, ValueError):
                pass
        try:
            for off, payload in iter_frames(fd, 0, end, STREAM_MAGIC):
                if unpack(payload)[0] == version:
                    return off
        except FrameError as e:
            raise CorruptStore(
                f"stream {self.stream!r}: damaged record at offset {getattr(e, 'offset', '?')} "
                f"in {self.path(first)}: {e}; run 'evstore verify' for a report") from None
        raise CorruptStore(f"stream {self.stream!r}: version {version} missing from {self.path(first)}")

    def records(self, tail: StreamTail, from_version: int, to_version: int):
        """Yield RecordedEvents ``from_version..to_version`` (inclusive, both
        within ``1..tail.version``), oldest first, in constant memory."""
        if from_version > to_version:
            return
        firsts = self._firsts
        i = bisect.bisect_right(firsts, from_version) - 1
        if i < 0:
            raise CorruptStore(f"stream {self.stream!r}: no segment holds version {from_version}")
        stream = self.stream
        last_us, last_dt = None, None
        v = from_version
        while v <= to_version:
            first = firsts[i]
            try:
                fd = self.fd(first)
            except FileNotFoundError:
                # compaction replaced the stream's first segments since the
                # tail was found: the versions before its new first segment
                # were removed (they are not readable), the rest are there
                firsts = self.list_segments()
                if not firsts or firsts[0] > to_version:
                    return
                v = max(v, firsts[0])
                i = bisect.bisect_right(firsts, v) - 1
                if firsts[i] == first:  # pragma: no cover - not compaction's doing
                    raise
                continue
            end = tail.end if first == tail.seg_first else file_size(fd)
            off = self._offset_of(first, v, end)
            for ok, o, _e, payload in walk(fd, STREAM_MAGIC, end, off, CHUNK, resync=False):
                if not ok:
                    raise CorruptStore(
                        f"stream {stream!r}: damaged record at offset {o} "
                        f"in {self.path(first)}: {damage_at(o, payload, end)}") from None
                rv, p, us, eid, etype, data, meta = unpack(payload)
                if rv != v:
                    raise CorruptStore(
                        f"stream {stream!r}: expected version {v}, found {rv} in {self.path(first)}"
                    )
                if us != last_us:
                    last_us, last_dt = us, us_to_datetime(us)
                yield RecordedEvent(stream, rv, p, eid, etype, data, meta, last_dt)
                v += 1
                if v > to_version:
                    return
            # the segment holding v: the last one starting at or before it
            # (not merely the next name: while a compaction step moves files
            # a listing may hold an old segment and its copy from the floor)
            j = bisect.bisect_right(firsts, v) - 1
            if j <= i:
                raise CorruptStore(f"stream {stream!r}: versions after {v - 1} are missing")
            i = j

    def first_version(self, tail: StreamTail) -> int:
        """The first version the log holds (compaction removes a prefix of
        versions, so a log may start after version 1); ``tail.version + 1``
        when it holds none."""
        firsts = self._firsts or self.list_segments()
        return firsts[0] if firsts else tail.version + 1

    def first_record(self) -> tuple[int, int] | None:
        """(version, recorded_us) of the first record, or None."""
        firsts = self._firsts or self.list_segments()
        if not firsts:
            return None
        try:
            payload, _ = read_frame(self.fd(firsts[0]), 0, STREAM_MAGIC)
        except FrameError:
            return None
        rec = unpack(payload)
        return rec[0], rec[2]

    # -- writing (lock holder only) ---------------------------------------------------
    def recheck_from(self, low: int, is_committed, keep) -> bool:
        """After a power cut, make the log a sound prefix from version ``low`` on.

        Stream logs are fsynced lazily (docs/FORMAT.md, "Power loss"), so the
        records written since the last sync may have reached the disk in any
        order: a later record intact after an earlier one that was lost (a
        hole of zeros), an index pointing at nothing.  The tail walk trusts
        the middle of a file, so this reads every record of the segments that
        hold ``low`` and later, checks each one (valid frame, the next version,
        held by the commit log from ``low`` on), rewrites those segments'
        indexes from what it found and cuts everything from the first bad
        record (``keep(path, offset, data)`` gets the bytes first).  Records
        before ``low`` were synced: damage there is CorruptStore, never cut.
        Returns True if it cut anything; the caller then rewrites the missing
        batches from the commit log.
        """
        self._close_writer()
        return recheck(self, low, is_committed, keep)

    def cut(self, tail: StreamTail, keep) -> None:
        """Remove everything after the committed tail; ``keep(path, offset,
        data)`` is handed the removed bytes first (recovery keeps them aside)."""
        self._close_writer()
        for first in self.list_segments():
            path = self.path(first)
            if tail.seg_first and first < tail.seg_first:
                continue
            keep_bytes = tail.end if first == tail.seg_first else 0
            with open(path, "r+b", opener=nofollow) as f:
                f.seek(keep_bytes)
                removed = f.read()
                if removed:
                    keep(path, keep_bytes, removed)
                f.truncate(keep_bytes)
            if keep_bytes == 0:
                self._drop_fd(first)
                os.unlink(path)
                try:
                    os.unlink(self.path(first, IDX_SUFFIX))
                except FileNotFoundError:
                    pass
            elif self._index_len(first) > tail.version - first + 1:
                with open(self.path(first, IDX_SUFFIX), "r+b", opener=nofollow) as f:
                    f.truncate(8 * (tail.version - first + 1))
        self.list_segments()

    def _close_writer(self) -> None:
        if self._writer:
            self._writer.close()
            self._widx.close()
            self._writer = self._widx = None

    def append(self, tail: StreamTail, frames: list[bytes], segment_bytes: int) -> StreamTail:
        """Write the frames of versions ``tail.version+1 ...`` after the tail.
        Returns the new tail (position/us left for the caller to fill)."""
        if tail.seg_first and tail.end < segment_bytes:
            first = tail.seg_first
        else:
            first = tail.version + 1
        w = self._writer
        if w is None or self._writer_first != first:
            self._close_writer()
            self._check_dir()
            w = SegmentWriter(self.path(first))
            try:  # both or neither: a damaged index name leaves no half writer
                widx = OffsetIndex(self.path(first, IDX_SUFFIX), writable=True)
            except BaseException:
                w.close()
                raise
            self._writer, self._widx = w, widx
            self._writer_first = first
            if first not in self._firsts:
                bisect.insort(self._firsts, first)
        w.size = file_size(w.fd)  # other processes may have appended since our last write
        if w.size != (tail.end if first == tail.seg_first else 0) or (
                first != tail.version + 1 and os.path.exists(self.path(tail.version + 1))):
            # (The second test: a writer with smaller segments rolled at this
            # tail, then died before its commit; writing the same versions
            # here would leave its records shadowing ours.)
            # Records of a batch that never committed (a writer died between
            # its stream records and its commit frame): the caller's tail is
            # stale; it finds the tail again, which cuts them, and retries.
            raise StaleTail(self.path(first), tail.end, w.size)
        if len(self._widx) != tail.version + 1 - first:
            self._reindex(first, tail.version, w.size)
        # Written WRITE_CHUNK bytes at a time, so that a batch of a million
        # records is never all in memory: none is visible before the commit
        # frame confirms the batch, so the number of writes changes nothing
        # for a crash (docs/FORMAT.md, "The write path").
        n = 0
        chunk, size = [], 0
        for fr in frames:
            chunk.append(fr)
            size += len(fr)
            if size >= WRITE_CHUNK:
                self._write_chunk(w, chunk, first, tail.version + 1 + n)
                n += len(chunk)
                chunk, size = [], 0
        if chunk:
            self._write_chunk(w, chunk, first, tail.version + 1 + n)
            n += len(chunk)
        return StreamTail(tail.version + n, first, w.size)

    def _write_chunk(self, w, frames: list, first: int, version: int) -> None:
        """Write ``frames`` (versions ``version``...) and their index entries."""
        off = w.append(b"".join(frames))
        offsets, o = [], off
        for fr in frames:
            offsets.append(o)
            o += len(fr)
        self._widx.extend(version - first, offsets)

    def _reindex(self, first: int, version: int, end: int) -> None:
        """Rebuild the index of segment ``first`` up to ``version`` from its
        frames: an index is a cache, never synced, and after a crash or power
        loss it can be short; extending it as is would leave zeroed entries."""
        idx = self._widx
        want = max(version + 1 - first, 0)
        n = len(idx)
        if n > want:
            idx.truncate(want)
            return
        fd = self.fd(first)
        start, done = 0, 0
        if n:
            off = idx.get(n - 1)
            try:
                payload, _ = read_frame(fd, off, STREAM_MAGIC)
                if unpack(payload)[0] == first + n - 1:
                    start, done = off, n - 1
            except (FrameError, ValueError):
                pass
        offsets = [off for off, _ in iter_frames(fd, start, end, STREAM_MAGIC)]
        idx.extend(done, offsets[: want - done])

    def writer_files(self) -> list[int]:
        """File descriptors this handle wrote to (for a later fsync)."""
        return [self._writer.fd, self._widx.fd] if self._writer else []
