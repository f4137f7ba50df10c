"""Compaction, step 4: rewrite each sealed commit-log segment that holds
removed events.  A batch keeps its readable suffix (same positions, versions,
ids and bytes) and the removed positions become gap frames, so the log still
accounts for every position.
"""
from __future__ import annotations

import os

import msgpack

from ...disk.bigframe import BigPayload
from ...disk.format import LOG_MAGIC, OVERHEAD, encode_frame
from ...disk.heads import batch_head
from ...disk.index import OffsetIndex
from ...disk.records import GAP, _array_header, _packb, gap_payload
from ...disk.frames import iter_frames
from ...disk.segment import fsync_dir, open_file
from . import journal
from .compact_io import _Counter, _Out
from .names import LOG_DIR, LOG_IDX, LOG_SEG


class LogCompaction:
    """Step 4 of :class:`compaction._Compaction`, mixed into it."""

    # -- the commit log --------------------------------------------------------------------
    def _log_segment(self, first: int, floors: dict[str, int]) -> None:
        path = self.log.path(first)
        fd = open_file(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if first == self.log.refresh().seg_first:  # the active one (a dry run):
                size = min(size, self.log.tail.end)    # its committed frames only
            if not self._removes_any(fd, size, floors):
                return
            if self.dry_run:
                sink = _Counter()
                self._rewrite(fd, size, floors, sink, [])
                self.saved += size - sink.size
                return
            tseg = self._tmp(self.log.dir, f"{first:016d}{LOG_SEG}")
            tidx = self._tmp(self.log.dir, f"{first:016d}{LOG_IDX}")
            out = _Out(tseg)
            entries: list[int] = []
            try:
                self._rewrite(fd, size, floors, out, entries)
                out.sync()
            finally:
                out.close()
            idx = OffsetIndex(tidx, writable=True)
            try:
                idx.truncate(0)
                idx.extend(0, entries)
                idx.sync()
            finally:
                idx.close()
            fsync_dir(self.log.dir)  # the temp files' names, before a journal names them
        finally:
            os.close(fd)
        rel = LOG_DIR
        with self.b._writing():
            journal.run(self.d, [[f"{rel}/{os.path.basename(tseg)}", f"{rel}/{first:016d}{LOG_SEG}"],
                                 [f"{rel}/{os.path.basename(tidx)}", f"{rel}/{first:016d}{LOG_IDX}"]],
                        [])

    @staticmethod
    def _removes_any(fd: int, size: int, floors) -> bool:
        for _off, payload in iter_frames(fd, 0, size, LOG_MAGIC, {}):
            s, fv = batch_head(payload)[:2]
            if s != GAP and fv < floors.get(s, 1):
                return True
        return False

    def _rewrite(self, fd: int, size: int, floors, out, entries: list) -> None:
        """Write the segment without the removed events: runs of kept frames
        copied as they are, suffixes of batches, runs of removed positions as
        single gap frames (merged with the gap frames already there)."""
        gap = None  # [first_position, count, recorded_us]: removed, not yet written
        run = None  # [start, end, offset in out]: kept frames, not yet copied

        def flush_gap():
            nonlocal gap
            if gap is not None:
                off = out.write(encode_frame(LOG_MAGIC, gap_payload(gap[0], gap[1], gap[2])))
                entries.extend([off] * gap[1])
                gap = None

        def flush_run():
            nonlocal run
            if run is not None:
                out.copy(fd, run[0], run[1])
                run = None

        def remove(fp, n, us):
            nonlocal gap
            flush_run()
            if gap is None:
                gap = [fp, n, us]
            else:
                gap[1] += n
                gap[2] = us

        for off, payload in iter_frames(fd, 0, size, LOG_MAGIC, {}):
            s, fv, fp, us, n, _hl = batch_head(payload)
            if s == GAP:
                remove(fp, n, us)
                continue
            j = min(max(floors.get(s, 1) - fv, 0), n)
            if j:
                remove(fp, j, us)
                self.removed += j
            if j == n:
                continue
            flush_gap()
            if j == 0:
                if run is None:
                    run = [off, off, out.size]
                entries.extend([run[2] + off - run[0]] * n)
                run[1] = off + len(payload) + OVERHEAD
            else:
                raw = payload.read_all() if isinstance(payload, BigPayload) else bytes(payload)
                start = out.write(encode_frame(LOG_MAGIC, _suffix(raw, s, fv, fp, us, n, j)))
                entries.extend([start] * (n - j))
        flush_run()
        flush_gap()


def _suffix(raw: bytes, stream: str, fv: int, fp: int, us: int, n: int, j: int) -> bytes:
    """The payload of a batch without its first ``j`` events: the same
    bytes for every event kept, sliced, never re-encoded."""
    up = msgpack.Unpacker(raw=False, strict_map_key=True)
    up.feed(raw)
    up.read_array_header()
    for _ in range(4 + 4 * j):
        up.skip()
    at = up.tell()
    head = _packb(stream) + _packb(fv + j) + _packb(fp + j) + _packb(us)
    return _array_header(4 + 4 * (n - j)) + head + raw[at:]
