"""Per-stream logs: each aggregate's events, in version order, on their own.

A stream lives in ``streams/<kk>/<key>/`` where ``key`` is the first 32 hex
digits of SHA-256 of the stream id's UTF-8 bytes and ``kk`` its first two: the
id itself never becomes a path, so ``../x``, ``CON`` or ``A``/``a`` are just
different keys, on any file system.  The directory holds:

* ``id`` -- the stream id, UTF-8, written before the directory appears
  (created as ``.tmp-*`` then renamed);
* ``NNNNNNNNNNNNNNNN.seg`` -- segments named by the first version they hold,
  one ``EvS1`` frame per event (:mod:`evstore.disk.format`);
* ``NNNNNNNNNNNNNNNN.idx`` -- their offset indexes, one entry per version.

A stream log is a copy of what the commit log holds, laid out for reading one
aggregate fast.  It is trusted only as far as its last record agrees with the
commit log: records past that are leftovers of a batch that never committed
and are invisible to readers (and cut by the next writer).
"""
from __future__ import annotations

import bisect
import hashlib
import os
from dataclasses import dataclass

from ..errors import CorruptStore
from .format import STREAM_MAGIC, FrameError
from .index import OffsetIndex
from .records import RecordedEvent, unpack, us_to_datetime
from .segment import (
    SegmentWriter,
    check_not_link,
    file_size,
    frame_before,
    iter_frames,
    listdir,
    nofollow,
    open_file,
    read_frame,
    scan,
    stable_listdir,
)

# What a commit check says of one stream record (see StreamLog.tail).
NOT_COMMITTED, COMMITTED, INSIDE_BATCH = 0, 1, 2

from ..backends.files.names import ID_FILE, STREAM_IDX as IDX_SUFFIX, STREAM_SEG as SEG_SUFFIX  # noqa: E402
#: A batch's stream records are written this many bytes at a time (at least one record).
WRITE_CHUNK = 1 << 20


def stream_key(stream: str) -> str:
    return hashlib.sha256(stream.encode("utf-8")).hexdigest()[:32]


def stream_dir(root: str, stream: str) -> str:
    key = stream_key(stream)
    return os.path.join(root, key[:2], key)


@dataclass
class StreamTail:
    """The committed end of one stream log."""

    version: int = 0
    seg_first: int = 0  #: first version of the segment holding ``version`` (0: none)
    end: int = 0  #: offset just past that record
    position: int = 0
    recorded_us: int = 0
    #: (segment first, offset) from which the file holds bytes that are not
    #: committed records, or None when the log ends cleanly
    cut_from: tuple[int, int] | None = None
    cut_reason: str = ""


class StaleTail(Exception):
    """The segment holds bytes past the tail the caller found: records of an
    append that never committed.  Internal: the store finds the tail again."""

    def __init__(self, path: str, end: int, size: int):
        super().__init__(f"{path}: {size - end} bytes after offset {end}")


class StreamLog:
    def __init__(self, root: str, stream: str):
        self.stream = stream
        self.dir = stream_dir(root, stream)
        self._firsts: list[int] = []
        self._fds: dict[int, int] = {}
        self._writer: SegmentWriter | None = None
        self._widx: OffsetIndex | None = None
        self._writer_first = 0
        self._known = False  #: the id file was seen (it is never removed but by repair)
        self._dir_ok = False  #: the directory was checked not to be a symbolic link

    # -- files ---------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.dir, ID_FILE))

    def path(self, first: int, suffix: str = SEG_SUFFIX) -> str:
        return os.path.join(self.dir, f"{first:016d}{suffix}")

    def _check_dir(self) -> None:
        """Refuse a stream directory (or ``streams/XX`` or ``streams``) that
        is a symbolic link: files opened through it would land outside the
        store.  Checked once per handle, when it first touches the directory."""
        if not self._dir_ok:
            shard = os.path.dirname(self.dir)
            check_not_link(os.path.dirname(shard))
            check_not_link(shard)
            self._dir_ok = check_not_link(self.dir)

    def list_segments(self) -> list[int]:
        self._check_dir()
        try:
            names = stable_listdir(self.dir)
        except FileNotFoundError:
            names = []
        firsts = sorted(int(n[:16]) for n in names
                        if n.endswith(SEG_SUFFIX) and len(n) == 20 and n[:16].isdigit())
        self._firsts = firsts
        return firsts

    def fd(self, first: int) -> int:
        fd = self._fds.get(first)
        if fd is None:
            self._check_dir()
            fd = open_file(self.path(first), os.O_RDONLY)
            self._fds[first] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._close_writer()

    def _index_get(self, first: int, i: int) -> int | None:
        path = self.path(first, IDX_SUFFIX)
        self._check_dir()
        try:
            fd = open_file(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, 8, 8 * i)
        finally:
            os.close(fd)
        return int.from_bytes(data, "big") if len(data) == 8 else None

    def _index_len(self, first: int) -> int:
        try:
            return os.stat(self.path(first, IDX_SUFFIX)).st_size // 8
        except FileNotFoundError:
            return 0

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
                return self._tail(is_committed, whole_batches)
            except FileNotFoundError:
                # a compaction replaced a segment between the listing and
                # its open: list again (it changes a few files, once)
                self._drop_all_fds()
                if attempt == 3:
                    raise

    def _drop_all_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _tail(self, is_committed, whole_batches: bool) -> StreamTail:
        t = StreamTail()
        head = getattr(is_committed, "head", None)  # the commit log's, when known
        #: True while every record met walking back lies past that head
        in_flight = None
        firsts = self.list_segments()
        for k in range(len(firsts) - 1, -1, -1):
            first = firsts[k]
            fd = self.fd(first)
            # Start from the last index entry that checks out, else the segment start.
            start = 0
            n = self._index_len(first)
            if n:
                off = self._index_get(first, n - 1)
                try:
                    payload, _ = read_frame(fd, off, STREAM_MAGIC)
                    if unpack(payload)[0] == first + n - 1:
                        start = off
                except (FrameError, ValueError, Exception):
                    start = 0
            r = scan(fd, start, STREAM_MAGIC)
            if r.status != "eof" and t.cut_from is None:
                t.cut_from, t.cut_reason = (first, r.end), f"{r.status}: {r.reason}"
            elif r.end == 0 and t.cut_from is None:
                # A writer killed between creating this segment and its first
                # write.  Left in place it would shadow the versions the next
                # writer puts in the previous segment.
                t.cut_from, t.cut_reason = (first, 0), "an empty segment left by an interrupted roll"
            end = r.end
            while end > 0:
                try:
                    off, payload = frame_before(fd, end, STREAM_MAGIC)
                    rec = unpack(payload)
                except (FrameError, ValueError) as e:
                    if in_flight and t.cut_from is not None:
                        # The rest of the batch that was being written when
                        # the power failed, torn sector by sector: nothing
                        # committed lies after it.  Go on from the valid
                        # records before it (a forward scan finds them).
                        valid_end = scan(fd, 0, STREAM_MAGIC).end
                        if valid_end < end:
                            t.cut_from = (first, valid_end)
                            t.cut_reason = "a torn batch that never committed"
                            end = valid_end
                            continue
                    raise CorruptStore(
                        f"stream {self.stream!r}: damaged record before offset {end} "
                        f"in {self.path(first)}: {e}"
                    ) from None
                v, p, us = rec[0], rec[1], rec[2]
                in_flight = in_flight is not False and head is not None and p > head
                state = is_committed(v, p)
                if state == INSIDE_BATCH and whole_batches:
                    raise CorruptStore(
                        f"stream {self.stream!r}: its log in {self.path(first)} ends at version {v} "
                        f"(position {p}), inside a committed batch whose later records are "
                        "missing; run 'evstore repair' to restore them from the commit log"
                    )
                if state:
                    t.version, t.seg_first, t.end, t.position, t.recorded_us = v, first, end, p, us
                    return t
                t.cut_from, t.cut_reason = (first, off), "records of a batch that never committed"
                end = off
        return t

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
            try:
                for _, payload in iter_frames(fd, off, end, STREAM_MAGIC):
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
            except FrameError as e:
                raise CorruptStore(
                    f"stream {stream!r}: damaged record at offset {getattr(e, 'offset', '?')} "
                    f"in {self.path(first)}: {e}"
                ) from None
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
    def create(self) -> bool:
        """Make the directory with its ``id`` file, atomically.  True if it
        wrote anything."""
        if self._known:
            return False
        if self._id_state() == "ok":
            self._known = True
            return False
        if os.path.isdir(self.dir):
            # The directory is only ever renamed into place with its id, so
            # here a power cut lost (part of) the id file, or someone deleted
            # it.  The directory's name is the hash of this stream's id, so
            # the id is known for certain: write it back, and never wipe the
            # segments (they may hold committed events).
            self._write_id()
            self._known = True
            return True
        parent = os.path.dirname(self.dir)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{os.path.basename(self.dir)}-{os.getpid()}")
        if os.path.islink(tmp) or os.path.isfile(tmp):
            os.unlink(tmp)  # a leftover (or a planted link) is removed, never followed
        if os.path.isdir(tmp):
            for name in listdir(tmp):
                os.unlink(os.path.join(tmp, name))
        else:
            os.mkdir(tmp)
        with open(os.path.join(tmp, ID_FILE), "wb", opener=nofollow) as f:
            f.write(self.stream.encode("utf-8"))
        os.rename(tmp, self.dir)
        self._known = True
        return True

    def _id_state(self) -> str:
        """"ok", or "missing" when the id file is absent, empty or a cut-short
        prefix of the id -- what a power cut leaves of an unsynced id.  Any
        other content is not this stream's directory: CorruptStore."""
        self._check_dir()
        try:
            with open(os.path.join(self.dir, ID_FILE), "rb", opener=nofollow) as f:
                stored = f.read()
        except FileNotFoundError:
            return "missing"
        want = self.stream.encode("utf-8")
        if stored == want:
            return "ok"
        if want.startswith(stored):
            return "missing"
        raise CorruptStore(
            f"stream directory {self.dir} belongs to "
            f"{stored.decode('utf-8', 'replace')!r}, not {self.stream!r}")

    def _write_id(self) -> None:
        path = os.path.join(self.dir, ID_FILE)
        tmp = f"{path}.tmp-{os.getpid()}"
        self._check_dir()
        with open(tmp, "wb", opener=nofollow) as f:
            f.write(self.stream.encode("utf-8"))
            os.fsync(f.fileno())
        os.replace(tmp, path)

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
        firsts = self.list_segments()
        if not firsts:
            return False
        k = max(bisect.bisect_right(firsts, low) - 1, 0)
        expected = firsts[k]
        bad = None
        for first in firsts[k:]:
            path = self.path(first)
            if first != expected:
                bad = (first, 0, f"{path} starts at version {first}, expected {expected}")
                break
            fd = self.fd(first)
            r = scan(fd, 0, STREAM_MAGIC)
            offsets = []
            for off, payload in iter_frames(fd, 0, r.end, STREAM_MAGIC):
                try:
                    v, p = unpack(payload)[:2]
                    if type(v) is not int or type(p) is not int:
                        raise ValueError("version and position must be integers")
                except Exception:  # msgpack raises several kinds; all mean damage
                    bad = (first, off, "an undecodable record")
                    break
                if v != expected:
                    bad = (first, off, f"version {v} where version {expected} belongs")
                    break
                if v >= low and is_committed(v, p) == NOT_COMMITTED:
                    bad = (first, off, f"version {v} at position {p} is not in the commit log")
                    break
                offsets.append(off)
                expected += 1
            if bad is None and r.status != "eof":
                bad = (first, r.end, f"{r.status}: {r.reason}")
            idx = OffsetIndex(self.path(first, IDX_SUFFIX), writable=True)
            try:
                idx.truncate(0)
                idx.extend(0, offsets)
            finally:
                idx.close()
            if bad is not None:
                break
        if bad is None:
            return False
        first, off, reason = bad
        if expected < low:
            raise CorruptStore(
                f"stream {self.stream!r}: {self.path(first)} offset {off}: {reason}, before "
                f"version {low} which was synced; run 'evstore verify' for a report and "
                "'evstore repair' to restore it from the commit log")
        self.cut(StreamTail(expected - 1, first, off), keep)
        return True

    def check_id(self) -> None:
        """Refuse a directory that holds another stream's id.  An absent or
        cut-short id is accepted: it is what a power cut leaves of a stream
        being created, and the next writer (or reconciliation) rewrites it."""
        self._id_state()

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

    def _drop_fd(self, first: int) -> None:
        fd = self._fds.pop(first, None)
        if fd is not None:
            os.close(fd)

    def append(self, tail: StreamTail, frames: list[bytes], segment_bytes: int) -> StreamTail:
        """Write the frames of versions ``tail.version+1 ...`` after the tail.
        Returns the new tail (position/us left for the caller to fill)."""
        if tail.seg_first and tail.end < segment_bytes:
            first = tail.seg_first
        else:
            first = tail.version + 1
        w = self._writer
        if w is None or self._writer_first != first:
            if w:
                w.close()
                self._widx.close()
            self._check_dir()
            w = self._writer = SegmentWriter(self.path(first))
            self._widx = OffsetIndex(self.path(first, IDX_SUFFIX), writable=True)
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
