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

        One pass, in two parts: up to the first frame that loses an event
        nothing is written, only the index entries are noted
        (:meth:`_unchanged_prefix`); from there :meth:`_write_rest` writes
        the new segment, that prefix first, as one copied run.  A frame of a
        stream without a floor is kept whole, its stream read by
        ``batch_stream`` (no integer decoded)."""
        by_key = {s.encode("utf-8"): f for s, f in floors.items()}
        found = self._unchanged_prefix(fd, size, floors, by_key, entries)
        if found is None:
            return False
        start, kept = found
        del entries[kept:]
        self._write_rest(fd, size, start, floors, by_key, open_out(), entries)
        return True

    def _unchanged_prefix(self, fd: int, size: int, floors, by_key, entries: list):
        """(offset, index entries before it) where the rewritten segment
        first differs from the old one, or None when no event of it goes.

        The segment is only read here, its index entries noted in
        ``entries``: a segment most of whose head stays is then copied, not
        re-framed.  The gap frames just before the first frame that loses an
        event are not part of the prefix: they merge with the new gap."""
        H, T = HEADER_SIZE, TRAILER_SIZE
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
                    return gaps_at if gaps_at is not None else (off, len(entries))
                else:
                    gaps_at = None
                entries += [off] * n
        return None

    def _write_rest(self, fd: int, size: int, start: int, floors, by_key, out, entries: list) -> None:
        """Write the new segment into ``out``: the unchanged prefix (the
        bytes before ``start``), then from ``start`` on, frame by frame, what
        each keeps -- all of it, a suffix of its batch, or nothing (its
        positions join the pending gap frame).  Frames come a buffer at a
        time (``frame_batches``: every CRC checked there), so a run of kept
        frames is copied from that same buffer when it lies in it."""
        H, T = HEADER_SIZE, TRAILER_SIZE
        w = _SegmentWriter(fd, out, entries, start)
        for buf, cbase, spans in frame_batches(fd, start, size, LOG_MAGIC, {}):
            w.cbuf, w.cbase = buf, cbase
            mv = memoryview(buf) if buf is not None else None
            for off, end in spans:
                h = batch_stream(buf, off - cbase + H) if buf is not None else None
                if h is not None and h[0] not in by_key:  # kept whole
                    w.flush_gap()
                    w.keep(off, end, h[1])
                    continue
                payload = cbase if buf is None else mv[off - cbase + H:end - cbase - T]
                s, fv, fp, us, n, _hl = batch_head(payload)
                if s == GAP:
                    w.remove(fp, n, us)
                    continue
                j = min(max(floors.get(s, 1) - fv, 0), n)
                if j:
                    w.remove(fp, j, us)
                    self.removed += j
                if j == n:
                    continue
                w.flush_gap()
                if j == 0:
                    w.keep(off, end, n)
                else:
                    raw = payload.read_all() if isinstance(payload, BigPayload) else bytes(payload)
                    at = out.write(encode_frame(LOG_MAGIC, _suffix(raw, s, fv, fp, us, n, j)))
                    entries.extend([at] * (n - j))
        w.cbuf = None
        w.flush_run()
        w.flush_gap()


class _SegmentWriter:
    """What :meth:`LogCompaction._write_rest` has decided but not yet
    written: a run of kept frames (copied at once when it ends, not frame by
    frame) and a run of removed positions (one gap frame when it ends), plus
    the buffer being walked, which a run that lies in it is copied from."""

    __slots__ = ("fd", "out", "entries", "gap", "run", "cbuf", "cbase")

    def __init__(self, fd: int, out, entries: list, start: int):
        self.fd, self.out, self.entries = fd, out, entries
        self.gap = None  # [first_position, count, recorded_us]: removed, not yet written
        self.run = [0, start, 0] if start else None  # [start, end, offset in out]: kept, not yet copied
        self.cbuf, self.cbase = None, 0  # the buffer being walked

    def flush_gap(self) -> None:
        gap = self.gap
        if gap is not None:
            off = self.out.write(encode_frame(LOG_MAGIC, gap_payload(gap[0], gap[1], gap[2])))
            self.entries.extend([off] * gap[1])
            self.gap = None

    def flush_run(self) -> None:
        run = self.run
        if run is not None:
            if self.cbuf is not None and run[0] >= self.cbase:  # (its end: by the frame handled)
                self.out.write(memoryview(self.cbuf)[run[0] - self.cbase:run[1] - self.cbase])
            else:  # begun in an earlier buffer (or a big frame is handled)
                self.out.copy(self.fd, run[0], run[1])
            self.run = None

    def keep(self, off: int, end: int, n: int) -> None:
        """The frame at ``off`` stays as it is: it joins the run of kept frames."""
        if self.run is None:
            self.run = [off, off, self.out.size]
        self.entries.extend([self.run[2] + off - self.run[0]] * n)
        self.run[1] = end

    def remove(self, fp: int, n: int, us: int) -> None:
        """Positions ``fp``.. (``n`` of them) go: they join the pending gap."""
        self.flush_run()
        if self.gap is None:
            self.gap = [fp, n, us]
        else:
            self.gap[1] += n
            self.gap[2] = us


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
