"""Compaction, step 4: rewrite each sealed commit-log segment that holds
removed events.  A batch keeps its readable suffix (same positions, versions,
ids and bytes) and the removed positions become gap frames, so the log still
accounts for every position.
"""
from __future__ import annotations

import os

import msgpack

from ...disk.bigframe import BigPayload
from ...disk.format import HEADER_SIZE, LOG_MAGIC, TRAILER_SIZE, FrameError, encode_frame
from ...disk.heads import batch_head, batch_stream
from ...disk.index import write_index
from ...disk.frames import frame_batches
from ...disk.records import GAP, gap_payload
from ...disk.segment import fsync_dir, fsync_file, open_file
from ...errors import CorruptStore
from ...model import _array_header, _packb
from . import journal
from .compact_io import _Counter, _Out, _unlink_quiet
from .names import LOG_DIR, LOG_IDX, LOG_SEG


class LogCompaction:
    """Step 4 of :class:`compaction._Compaction`, mixed into it."""

    # -- the commit log --------------------------------------------------------------------
    #: Rewritten segments are moved into place by one journal step per this
    #: many bytes of them (their temp files exist beside the old ones until then).
    LOG_GROUP_BYTES = 256 << 20

    def _log_segment(self, first: int, floors: dict[str, int]) -> list | None:
        """Write segment ``first`` without its removed events into temp
        files (not yet fsynced); returns the moves that put them in place
        (for :meth:`_log_commit`), or None when nothing of it goes."""
        path = self.log.path(first)
        fd = open_file(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if first == self.log.refresh().seg_first:  # the active one (a dry run):
                size = min(size, self.log.tail.end)    # its committed frames only
            if self.dry_run:
                sink = _Counter()
                if self._rewrite(fd, size, floors, lambda: sink, []):
                    self.saved += size - sink.size
                return None
            tseg = self._tmp(self.log.dir, f"{first:016d}{LOG_SEG}")
            tidx = self._tmp(self.log.dir, f"{first:016d}{LOG_IDX}")
            outs: list[_Out] = []

            def open_out() -> _Out:
                outs.append(_Out(tseg))
                return outs[0]

            entries: list[int] = []
            try:
                if not self._rewrite(fd, size, floors, open_out, entries):
                    return None  # nothing of this segment goes
                outs[0].flush()  # fsynced by _log_commit, once it is to be moved
            except FrameError as e:  # never copy a damaged frame: the segment stays
                for out in outs:
                    out.close()
                    _unlink_quiet(tseg)
                raise CorruptStore(f"commit log {path}: damaged frame at offset "
                                   f"{getattr(e, 'offset', '?')}: {e}; run 'evstore verify' "
                                   "for a report and 'evstore repair' to fix it") from None
            finally:
                for out in outs:
                    out.close()
            write_index(tidx, entries)
        finally:
            os.close(fd)
        rel = LOG_DIR
        return [[f"{rel}/{os.path.basename(tseg)}", f"{rel}/{first:016d}{LOG_SEG}"],
                [f"{rel}/{os.path.basename(tidx)}", f"{rel}/{first:016d}{LOG_IDX}"]]

    def _log_commit(self, moves: list) -> None:
        """One journal step for the segments rewritten: their temp files
        fsynced, then one fsync of the directory for all their names, then
        one lock hold for all their renames.  (The files are fsynced here,
        not as they are written: while the stream step runs beside the
        writing, a flush of their data would lengthen that step's fsyncs,
        made under the writer lock, and so the appends waiting for it.)"""
        if not moves:
            return
        for src, _dst in moves:
            fd = open_file(os.path.join(self.d, src), os.O_RDONLY)
            try:
                fsync_file(fd)
            finally:
                os.close(fd)
        fsync_dir(self.log.dir)  # the temp files' names, before a journal names them
        held: list[int] = []
        try:
            with self.b._writing():
                held = journal.hold(self.d, moves, [])  # the old segments: freed after
                journal.run(self.d, moves, [])
        finally:
            journal.release(held)

    def _rewrite(self, fd: int, size: int, floors, open_out, entries: list) -> bool:
        """Write the segment without the removed events: runs of kept frames
        copied as they are, suffixes of batches, runs of removed positions as
        single gap frames (merged with the gap frames already there).
        Returns False, having written nothing, when no event of it goes.

        One pass: up to the first frame that loses an event nothing is
        written (only the index entries are noted); that prefix is then
        copied as one run, less the gap frames just before that frame, which
        merge with the new gap.  A frame of a stream without a floor is kept
        whole, its stream read by ``batch_stream`` (no integer decoded).
        Frames come a buffer at a time (``frame_batches``: every CRC checked
        there), and a run of kept frames is copied from that same buffer
        when it lies in it (a run that began in an earlier one is read
        again)."""
        by_key = {s.encode("utf-8"): f for s, f in floors.items()}
        H, T = HEADER_SIZE, TRAILER_SIZE
        # the unchanged prefix
        start = None
        gaps_at = None  # (offset, positions before) of the gap frames just seen
        for buf, base, spans in frame_batches(fd, 0, size, LOG_MAGIC, {}):
            for off, end in spans:
                h = batch_stream(buf, off - base + H) if buf is not None else None
                if h is not None and h[0] not in by_key:
                    entries += [off] * h[1]
                    gaps_at = None
                    continue
                payload = base if buf is None else memoryview(buf)[off - base + H:end - base - T]
                s, fv, fp, us, n, _hl = batch_head(payload)
                if s == GAP:
                    if gaps_at is None:
                        gaps_at = (off, len(entries))
                elif fv < floors.get(s, 1):
                    start, kept = gaps_at if gaps_at is not None else (off, len(entries))
                    break
                else:
                    gaps_at = None
                entries += [off] * n
            if start is not None:
                break
        if start is None:
            return False
        del entries[kept:]
        out = open_out()
        gap = None  # [first_position, count, recorded_us]: removed, not yet written
        run = [0, start, 0] if start else None  # [start, end, offset in out]: kept, not yet copied
        cbuf, cbase = None, 0  # the buffer being walked

        def flush_gap():
            nonlocal gap
            if gap is not None:
                off = out.write(encode_frame(LOG_MAGIC, gap_payload(gap[0], gap[1], gap[2])))
                entries.extend([off] * gap[1])
                gap = None

        def flush_run():
            nonlocal run
            if run is not None:
                if cbuf is not None and run[0] >= cbase:  # (its end: by the frame handled)
                    out.write(memoryview(cbuf)[run[0] - cbase:run[1] - cbase])
                else:  # begun in an earlier buffer (or a big frame is handled)
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

        for cbuf, cbase, spans in frame_batches(fd, start, size, LOG_MAGIC, {}):
            buf = cbuf
            mv = memoryview(buf) if buf is not None else None
            for off, end in spans:
                h = batch_stream(buf, off - cbase + H) if buf is not None else None
                if h is not None and h[0] not in by_key:  # kept whole
                    if gap is not None:
                        flush_gap()
                    if run is None:
                        run = [off, off, out.size]
                    entries += [run[2] + off - run[0]] * h[1]
                    run[1] = end
                    continue
                payload = cbase if buf is None else mv[off - cbase + H:end - cbase - T]
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
                    run[1] = end
                else:
                    raw = payload.read_all() if isinstance(payload, BigPayload) else bytes(payload)
                    at = out.write(encode_frame(LOG_MAGIC, _suffix(raw, s, fv, fp, us, n, j)))
                    entries.extend([at] * (n - j))
        cbuf = None
        flush_run()
        flush_gap()
        return True


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
