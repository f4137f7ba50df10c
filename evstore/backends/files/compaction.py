"""``compact`` on files: remove the bytes of every event no longer readable.

Why this shape (docs/FORMAT.md, "Forgetting", has the whole reasoning):

1. **Make the removals final.**  Under the writer lock, ask the view again
   and raise each stream's floor in ``cuts.json`` to its first readable
   version (delete and truncate did that already; retention had not).  From
   then on the floors say exactly what may be physically removed, and they
   only ever rise, so the later steps need no view: a retention rule
   cleared while compaction runs shows again what compaction had not yet
   made final, never an event that is half gone.
2. **Roll the commit log** (under the lock) when its active segment holds
   something to remove, so that every segment rewritten is sealed and no
   writer appends to it.
3. **Stream logs first.**  Each stream whose log starts below its floor
   loses its first segments; the segment holding the floor is copied from
   the floor on into a new segment named by it (a log may start at a
   version > 1); a stream left with nothing loses its directory (its
   version stays in its cut).  The copy is made without the lock, the rest
   of a segment that is still being appended to is copied under it.
4. **Then the commit log.**  Each sealed segment with removed events is
   rewritten: a batch keeps its readable suffix (same positions, versions,
   ids and bytes), and the positions removed become *gap frames*
   (``["", 0, first_position, recorded_us, count]``), so that the log still
   accounts for every position: a missing position is provably removed.
   A stream's events are removed here only once its log no longer holds
   them (a stream log record must always find its batch).
5. Snapshots of deleted streams at or below their delete, and quarantined
   bytes that may hold a removed event, are removed.

Each rewrite is written to ``.tmp-compact-*`` files, fsynced, and moved
into place under the writer lock through :mod:`.journal` (a crash finishes
or forgets a step, never half of one).  Writers wait at most one step's
renames; readers never wait, and see the old files or the new ones.
"""
from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import threading

import msgpack

from ...core.forgetting import Cut
from ...disk.bigframe import BigPayload
from ...disk.commitlog import CommitLog, SealSyncError
from ...disk.format import LOG_MAGIC, OVERHEAD, STREAM_MAGIC, FrameError, encode_frame
from ...disk.heads import batch_head
from ...disk.index import OffsetIndex
from ...disk.records import GAP, _array_header, _packb, gap_payload, unpack
from ...disk.segment import (fsync_dir, fsync_file, iter_frames, listdir, open_file,
                             stable_listdir)
from ...disk.streamlog import StreamLog, stream_key
from ...errors import CorruptStore
from . import journal
from .names import (COMPACT_TMP, LOG_DIR, LOG_IDX, LOG_SEG, QUARANTINE, STREAM_IDX,
                    STREAM_SEG, STREAMS_DIR)

_BUF = 1 << 20


#: One compaction at a time in a process (its temp files carry the pid: a
#: compaction removes those of dead processes, and of its own process only
#: when no other compaction of that process runs).
_RUNNING = threading.Lock()


def compact(backend, view, dry_run: bool = False, progress=None) -> dict:
    with _RUNNING:
        d = backend.directory
        before = store_bytes(d)
        log = CommitLog(os.path.join(d, LOG_DIR))
        try:
            return _Compaction(backend, view, log, dry_run,
                               progress or (lambda done, total: None), before).run()
        finally:
            log.close()


def store_bytes(d: str) -> int:
    """Bytes of every file of the store (quarantine included)."""
    n = 0
    for root, _dirs, files in os.walk(d):
        for name in files:
            try:
                n += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return n


class _Compaction:
    def __init__(self, backend, view, log: CommitLog, dry_run: bool, progress, before: int):
        self.b = backend
        self.d = backend.directory
        self.view = view
        self.log = log
        self.dry_run = dry_run
        self.progress = progress
        self.before = before
        self.removed = 0        #: events removed from the commit log (each event once)
        self.saved = 0          #: bytes a dry run would reclaim
        self.streams_root = os.path.join(self.d, STREAMS_DIR)

    # -- the steps -------------------------------------------------------------------
    def run(self) -> dict:
        self._remove_leftovers()
        self.log.refresh()
        v1 = self.view()
        scan = self._scan(v1)
        if self.dry_run:
            floors = self._floors(v1, scan, dict(self.b.cuts()), final=False)
        else:
            with self.b._writing():
                # stream logs synced up to the head first: recovery after a
                # power cut then never rewrites (from the commit log) a
                # stream record this compaction removes
                self.b._sync_streams_locked()
                floors = self._floors(v1, scan, None, final=True)
                if scan.active_candidates:
                    self._roll()
        cuts = floors
        total = sum(_size(self.log.path(f)) for f in self.log.list_segments())
        done = 0
        # stream logs, then the commit log
        self._streams(cuts)
        firsts = self.log.list_segments()
        sealed = firsts if self.dry_run else firsts[:-1]
        eff = {s: c.floor if self.dry_run else self._effective_floor(s, c)
               for s, c in cuts.items() if c.floor > 1}
        for first in sealed:
            if eff:
                self._log_segment(first, eff)
            done += _size(self.log.path(first))
            self.progress(done, total)
        self._snapshots(cuts)
        self._quarantine(cuts)
        after = self.before - self.saved if self.dry_run else store_bytes(self.d)
        return {"events_removed": self.removed, "bytes_before": self.before,
                "bytes_after": after}

    def _remove_leftovers(self) -> None:
        """Temp files of a step that never reached its journal: those of
        compactions that died (a temp file's name holds its maker's pid;
        another compaction running now keeps its own)."""
        if self.dry_run:
            return
        with self.b._writing():
            logdir = os.path.join(self.d, LOG_DIR)
            dirs = [logdir] + [k for sh in _subdirs(self.streams_root) for k in _subdirs(sh)]
            for d in dirs:
                for name in listdir(d):
                    if name.startswith(COMPACT_TMP) and not _alive(name):
                        os.unlink(os.path.join(d, name))

    @staticmethod
    def _tmp(d: str, name: str) -> str:
        """A temp file's path: ``.tmp-compact-<pid>-<name>``."""
        return os.path.join(d, f"{COMPACT_TMP}{os.getpid()}-{name}")

    def _scan(self, v1) -> "_Scan":
        """One pass over the batch heads: what retention needs per stream, and
        whether the active segment holds anything that may go."""
        sc = _Scan()
        log = self.log
        head = log.tail.head
        sc.head = head
        if head == 0:
            return sc
        active = log.tail.seg_first
        rules = not (not v1.stream_rules and not v1.prefix_rules)
        cuts = v1.cuts
        # without a rule only the active segment matters (cuts are floors already)
        start = 1 if rules else min(active, head)
        for s, fv, fp, us, n in self._heads(start, head):
            if s == GAP:
                continue
            last = fv + n - 1
            cand = False
            cut = cuts.get(s)
            if cut is not None and (cut.hard or cut.floor > fv):
                cand = True
            if rules:
                rule = v1.rule_for(s)
                if rule is not None:
                    info = sc.streams.get(s)
                    if info is None:
                        info = sc.streams[s] = [fv, last, None]
                    info[1] = last
                    oldest = v1.oldest_us(s)
                    if oldest is not None and us >= oldest and info[2] is None:
                        info[2] = fv
                    if (oldest is not None and us < oldest) or rule.max_count is not None:
                        cand = True
            if cand and fp + n - 1 >= active:
                sc.active_candidates = True
        return sc

    def _heads(self, start: int, head: int):
        """(stream, first version, first position, time, count) of every
        frame from the segment holding ``start`` to ``head``, heads read by
        slicing (disk.heads)."""
        log = self.log
        firsts = [f for f in log.list_segments() if f <= head]
        i = max(bisect.bisect_right(firsts, start) - 1, 0)
        for first in firsts[i:]:
            fd = log.fd(first)
            end = log.tail.end if first == log.tail.seg_first else os.fstat(fd).st_size
            try:
                for _off, payload in iter_frames(fd, 0, end, LOG_MAGIC, {}):
                    yield batch_head(payload)[:5]
            except FrameError as e:
                raise CorruptStore(f"commit log {log.path(first)}: damaged frame at offset "
                                   f"{getattr(e, 'offset', '?')}: {e}; run 'evstore verify' "
                                   "for a report and 'evstore repair' to fix it") from None

    def _floors(self, v1, sc: "_Scan", cuts, final: bool) -> dict[str, Cut]:
        """Raise each retained stream's floor to its first readable version
        (under the writer lock when ``final``: the view is asked again and
        only what both views remove is made final).  Returns the cuts."""
        if cuts is None:
            cuts = dict(self.b._forget.cuts.get())
        v2 = self.view() if final else v1
        changed = False
        for s, (first, last, young) in sc.streams.items():
            current = self.b.version(s) if v1.counts_versions(s) or v2.counts_versions(s) else last
            ks = []
            for v in (v1, v2):
                k = v.first_version(s, current)
                if v.oldest_us(s) is not None:
                    r1, r2 = v1.rule_for(s), v2.rule_for(s)
                    same = r1 is not None and r2 is not None and r1.max_age_us == r2.max_age_us
                    if same:
                        k = max(k, young if young is not None else last + 1)
                ks.append(k)
            k = min(ks[0], ks[1], last + 1)
            old = cuts.get(s)
            if k > (old.floor if old is not None else 1):
                cuts[s] = Cut(s, k, old.hard, old.deleted) if old is not None else Cut(s, k)
                changed = True
        if changed and final:
            self.b._forget.put_cuts(cuts, True)
        return cuts

    def _roll(self) -> None:
        """Start a new commit-log segment (under the lock), so that the one
        that held the head is sealed and may be rewritten."""
        log = self.b._wlog
        try:
            created = log.writer(1)[2]
        except SealSyncError as e:
            self.b._poison(f"fsync of the commit-log segment {e.filename} failed while "
                           "rolling for a compaction", e)
        if created:
            fsync_dir(log.dir)
        self.log.close()
        self.log = CommitLog(os.path.join(self.d, LOG_DIR))
        self.log.refresh()

    # -- stream logs ---------------------------------------------------------------------
    def _effective_floor(self, stream: str, cut: Cut) -> int:
        """What the commit log may lose of ``stream``: below its floor, and
        only what its stream log no longer holds."""
        sl = StreamLog(self.streams_root, stream)
        try:
            firsts = sl.list_segments()
        finally:
            sl.close()
        return min(cut.floor, firsts[0]) if firsts else cut.floor

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
                    journal.run(self.d, moves, unlink, rmdir)
        finally:
            for _s, sl, *_ in group:
                sl.close()

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

    # -- snapshots and quarantine ------------------------------------------------------------
    def _snapshots(self, cuts) -> None:
        for s, c in cuts.items():
            if not c.deleted:
                continue
            for v in self.b.snapshot_versions(s):
                if v <= c.deleted:
                    if self.dry_run:
                        self.saved += _size(self.b.snapshot_path(s, v))
                    else:
                        self.b.delete_snapshot(s, v)

    def _quarantine(self, cuts) -> None:
        """Quarantined bytes may hold a removed event (a stream log's records
        cut by recovery, a repair's removed events): remove every quarantine
        entry that names a stream with removed events or holds its id."""
        qdir = os.path.join(self.d, QUARANTINE)
        gone = [s for s, c in cuts.items() if c.floor > 1 or c.hard]
        if not gone or not os.path.isdir(qdir) or os.path.islink(qdir):
            return
        pats = set()
        for s in gone:
            pats.add(stream_key(s).encode())
            pats.add(_packb(s))
            pats.add(json.dumps(s).encode())
            pats.add(json.dumps(s, ensure_ascii=False).encode("utf-8"))
        rx = re.compile(b"|".join(re.escape(p) for p in sorted(pats, key=len, reverse=True)))
        for name in sorted(listdir(qdir)):
            p = os.path.join(qdir, name)
            if os.path.isdir(p) and not os.path.islink(p):
                if any(_holds(os.path.join(r, f), rx) for r, _d, fs in os.walk(p) for f in fs):
                    if self.dry_run:
                        self.saved += sum(_size(os.path.join(r, f)) for r, _d, fs in os.walk(p)
                                          for f in fs)
                    else:
                        shutil.rmtree(p)
                continue
            stem, ext = os.path.splitext(p)
            if ext != ".bin":
                continue
            pair = [stem + ".bin", stem + ".json"]
            if any(_holds(f, rx) for f in pair):
                for f in pair:
                    if self.dry_run:
                        self.saved += _size(f)
                    else:
                        try:
                            os.unlink(f)
                        except FileNotFoundError:
                            pass
        if not self.dry_run:
            fsync_dir(qdir)


class _Scan:
    def __init__(self):
        self.head = 0
        #: stream -> [first version seen, last version, first version young enough]
        self.streams: dict[str, list] = {}
        self.active_candidates = False


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


class _Out:
    """A temp segment being written, buffered."""

    def __init__(self, path: str):
        self.fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.size = 0
        self.buf = bytearray()

    def write(self, data) -> int:
        off = self.size
        self.buf += data
        self.size += len(data)
        if len(self.buf) >= _BUF:
            self._flush()
        return off

    def copy(self, fd: int, start: int, end: int) -> None:
        """Bytes ``start..end`` of ``fd``, as they are."""
        if end - start < _BUF:
            self.write(os.pread(fd, end - start, start))
            return
        self._flush()
        _copy_range(fd, self.fd, start, end)
        self.size += end - start

    def _flush(self) -> None:
        view = memoryview(self.buf)
        while view:
            view = view[os.write(self.fd, view):]
        self.buf = bytearray()

    def sync(self) -> None:
        self._flush()
        fsync_file(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Counter:
    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        off = self.size
        self.size += len(data)
        return off

    def copy(self, fd, start: int, end: int) -> None:
        self.size += end - start


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Bytes ``start..end`` of ``src`` appended to ``dst``, a MiB at a time.
    (Not ``copy_file_range``: every byte evstore writes goes through
    ``os.write``, which the power-loss tests record.)"""
    pos = start
    while pos < end:
        data = os.pread(src, min(_BUF, end - pos), pos)
        if not data:
            raise CorruptStore(f"a file being compacted ended at offset {pos}, before {end}")
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]
        pos += len(data)


def _alive(name: str) -> bool:
    """Whether the process that made the temp file ``name`` still runs."""
    pid = name[len(COMPACT_TMP):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's): not ours to remove
    return True


def _unlink_tmp(tmp) -> None:
    tseg, tidx, st = tmp
    os.close(st["fd"])
    for p in (tseg, tidx):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _subdirs(path: str):
    try:
        names = stable_listdir(path)
    except FileNotFoundError:
        return
    for n in sorted(names):
        p = os.path.join(path, n)
        if not n.startswith(".") and os.path.isdir(p) and not os.path.islink(p):
            yield p


def _holds(path: str, rx) -> bool:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return rx.search(data) is not None
