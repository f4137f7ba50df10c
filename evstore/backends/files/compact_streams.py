"""Compaction, step 3: stream logs first.  Each stream whose log starts below
its floor loses its first segments; the segment holding the floor is copied
from the floor on into a new segment named by it.  Streams go in groups, one
journal step (and a few fsyncs) per group.

Stream logs are cut before the commit log because a stream-log record must
always find its batch (compaction.py's docstring has the whole order).
"""
from __future__ import annotations

import bisect
import os

from ...disk.format import STREAM_MAGIC, FrameError
from ...disk.index import OffsetIndex
from ...disk.frames import iter_frames
from ...disk.segment import fsync_dir, fsync_file, listdir, open_file
from ...disk.streamlog import StreamLog
from ...errors import CorruptStore
from ...model import unpack
from . import journal
from .compact_io import _copy_range, _size, _unlink_tmp
from .names import COMPACT_TMP, STREAM_IDX, STREAM_SEG


class StreamCompaction:
    """Step 3 of :class:`compaction._Compaction`, mixed into it."""

    #: A journal step covers this many streams (or this many bytes copied):
    #: one lock hold and a few fsyncs for all of them, not per stream.
    GROUP_STREAMS = 256
    GROUP_BYTES = 64 << 20

    def _streams(self, cuts) -> None:
        group, size = [], 0
        for stream, cut in sorted(cuts.items()):
            if cut.floor <= 1:
                continue
            prep = self._stream_prepare(stream, cut.floor)
            if prep is None:
                continue
            group.append(prep)
            size += prep[4][2]["copied"] - prep[4][2]["start"] if prep[4] else 0
            if len(group) >= self.GROUP_STREAMS or size >= self.GROUP_BYTES:
                self._streams_apply(group)
                group, size = [], 0
        if group:
            self._streams_apply(group)

    def _stream(self, stream: str, floor: int) -> None:
        """One stream's step on its own."""
        prep = self._stream_prepare(stream, floor)
        if prep is not None:
            self._streams_apply([prep])

    def _stream_prepare(self, stream: str, floor: int):
        """Without the lock: whether the stream's log holds anything below
        ``floor``, and the copy of its segment holding the floor from the
        floor on.  Returns (stream, log, floor, segment, temp) or None."""
        sl = StreamLog(self.streams_root, stream)
        firsts = sl.list_segments()
        if not firsts or firsts[0] >= floor:
            sl.close()
            return None
        if self.dry_run:
            self.saved += self._stream_bytes_before(sl, firsts, floor)
            sl.close()
            return None
        j = bisect.bisect_right(firsts, floor) - 1
        seg = firsts[j]
        tmp = None
        try:
            rsl, rtail = self.b._reader_stream(stream)
            rsl.close()
            if seg != floor and rtail.version >= floor:
                tmp = self._copy_from(sl, seg, floor)  # without the lock: most of it
        except BaseException:
            sl.close()
            raise
        return stream, sl, floor, seg, tmp

    def _streams_apply(self, group) -> None:
        """Under the lock, one journal step for the group: the records
        appended since each copy, then the renames and deletions."""
        moves, unlink, rmdir = [], [], []
        held: list[int] = []
        try:
            with self.b._writing():
                for stream, sl, floor, seg, tmp in group:
                    rel = os.path.relpath(sl.dir, self.d)
                    _sl, tail = self.b._stream_tail_locked(stream)
                    firsts = sl.list_segments()
                    if tail.version >= floor and tmp is None and seg != floor:
                        tmp = self._copy_from(sl, seg, floor)  # appended meanwhile: rare
                    if tail.version < floor:
                        # nothing left: the directory goes (its version stays in its cut)
                        if tmp is not None:
                            _unlink_tmp(tmp)
                        names = [n for n in listdir(sl.dir) if not n.startswith(COMPACT_TMP)]
                        unlink += [f"{rel}/{n}" for n in names]
                        rmdir.append(rel)
                        continue
                    if tmp is not None:
                        self._copy_rest(sl, seg, tmp, tail)
                        moves += [[f"{rel}/{os.path.basename(tmp[0])}",
                                   f"{rel}/{floor:016d}{STREAM_SEG}"],
                                  [f"{rel}/{os.path.basename(tmp[1])}",
                                   f"{rel}/{floor:016d}{STREAM_IDX}"]]
                    unlink += [f"{rel}/{f:016d}{suf}" for f in firsts if f < floor
                               for suf in (STREAM_SEG, STREAM_IDX)]
                if moves or unlink or rmdir:
                    self._release(group)
                    held = journal.hold(self.d, moves, unlink)
                    journal.run(self.d, moves, unlink, rmdir)
        finally:
            journal.release(held)  # the lock let go: the blocks are freed now
            for _s, sl, *_ in group:
                sl.close()

    def _release(self, group) -> None:
        """Close this process's cached descriptors of the group's stream
        logs before the journal unlinks their files (the writer's cached
        logs would be dropped anyway by the step's new generation); the
        step holds its own (``journal.hold``) and frees the blocks once
        the lock is let go."""
        b = self.b
        for stream, sl, *_ in group:
            sl.close()
            w = b._wstreams.pop(stream, None)
            if w is not None:
                w.close()
            b._wtails.pop(stream, None)

    def _stream_bytes_before(self, sl, firsts, floor) -> int:
        """Bytes of a stream log's records below ``floor`` (a dry run)."""
        n = 0
        for f in firsts:
            if f >= floor:
                break
            n += _size(sl.path(f)) + _size(sl.path(f, STREAM_IDX))
        j = bisect.bisect_right(firsts, floor) - 1
        if firsts[j] < floor:
            n -= _size(sl.path(firsts[j])) + _size(sl.path(firsts[j], STREAM_IDX))
            try:
                fd = sl.fd(firsts[j])
                size = os.fstat(fd).st_size
                off = sl._offset_of(firsts[j], floor, size)
                n += off + 8 * (floor - firsts[j])
            except CorruptStore:
                pass
        return n

    def _copy_from(self, sl, seg: int, floor: int):
        """Copy the records of segment ``seg`` from version ``floor`` to the
        file's last whole frame into temp files; returns (seg tmp, idx tmp,
        state) for :meth:`_copy_rest`."""
        fd = sl.fd(seg)
        size = os.fstat(fd).st_size
        start = sl._offset_of(seg, floor, size)
        tseg = self._tmp(sl.dir, f"{floor:016d}{STREAM_SEG}")
        tidx = self._tmp(sl.dir, f"{floor:016d}{STREAM_IDX}")
        out = open_file(tseg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        state = {"fd": out, "src": fd, "start": start, "copied": start, "offsets": [],
                 "version": floor}
        try:
            self._copy_frames(state, size)
        except BaseException:
            os.close(out)
            raise
        return tseg, tidx, state

    def _copy_frames(self, st, end: int) -> None:
        """Copy whole, valid records from ``st['copied']`` up to ``end``."""
        src, pos = st["src"], st["copied"]
        last = pos
        try:
            for off, payload in iter_frames(src, pos, end, STREAM_MAGIC):
                v = unpack(payload)[0]
                if v != st["version"]:
                    break
                st["offsets"].append(off - st["start"])
                st["version"] += 1
                last = off + len(payload) + 16
        except FrameError:
            pass  # bytes being written, or leftovers: the rest is copied under the lock
        _copy_range(src, st["fd"], pos, last)
        st["copied"] = last

    def _copy_rest(self, sl, seg: int, tmp, tail) -> None:
        """Under the lock: the records appended to ``seg`` since the copy,
        up to the committed tail; then the index; both fsynced."""
        tseg, tidx, st = tmp
        try:
            end = tail.end if tail.seg_first == seg else os.fstat(st["src"]).st_size
            if end > st["copied"]:
                self._copy_frames(st, end)
            fsync_file(st["fd"])
        finally:
            os.close(st["fd"])
        idx = OffsetIndex(tidx, writable=True)
        try:
            idx.truncate(0)
            idx.extend(0, st["offsets"])
            idx.sync()
        finally:
            idx.close()
        fsync_dir(sl.dir)  # the temp files' names, before a journal names them
