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
   them (a stream log record must always find its batch).  Steps 3 and 4
   overlap: the stream step runs in a thread while the segments are
   written to temp files, and no segment is moved into place before that
   step is done and the stream logs are checked (``_commit_group``).
5. Snapshots of deleted streams at or below their delete, and quarantined
   bytes that may hold a removed event, are removed.

Each rewrite is written to ``.tmp-compact-*`` files, fsynced, and moved
into place under the writer lock through :mod:`.journal` (a crash finishes
or forgets a step, never half of one).  Writers wait at most one step's
renames; readers never wait, and see the old files or the new ones.

One compaction or repair of a store runs at a time (:mod:`.compaction_lock`).
"""
from __future__ import annotations

import bisect
import json
import os
import re
import shutil
import threading

from ...core.forgetting import Cut
from ...disk.commitlog import CommitLog, SealSyncError
from ...disk.format import LOG_MAGIC, FrameError
from ...disk.heads import batch_head
from ...disk.frames import iter_frames
from ...disk.records import GAP
from ...disk.segment import fsync_dir, listdir, nofollow, stable_listdir
from ...disk.streamdir import stream_key
from ...disk.streamlog import StreamLog
from ...errors import CorruptStore
from ...model import _packb
from .compact_io import _size, _unlink_quiet
from .compact_log import LogCompaction
from .compaction_lock import compaction_lock, maker_alive
from .compact_streams import StreamCompaction
from .names import COMPACT_TMP, LOG_DIR, QUARANTINE, STREAMS_DIR


#: One compaction at a time in a process (its temp files carry the pid: a
#: compaction removes those of dead processes, and of its own process only
#: when no other compaction of that process runs).
_RUNNING = threading.Lock()

def compact(backend, view, dry_run: bool = False, progress=None) -> dict:
    with _RUNNING, compaction_lock(backend.directory, backend.lock_timeout):
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


class _Compaction(StreamCompaction, LogCompaction):
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
        floors = {s: c.floor for s, c in cuts.items() if c.floor > 1}
        # Stream logs, then the commit log.  The stream step runs in a thread
        # (it mostly waits for the file system: unlinks, fsyncs) while the
        # commit log's sealed segments are written to temp files without
        # what the floors remove; none is moved into place before the stream
        # step is done and every stream log is seen not to hold those events
        # any more (_commit_group): the order on disk is the order above.
        streams = None
        if self.dry_run or not floors:
            self._streams(cuts)
        else:
            streams = _Background(self._streams, cuts)
        firsts = self.log.list_segments()
        sealed = firsts if self.dry_run else firsts[:-1]
        group, grouped = [], 0
        try:
            for first in sealed:
                size = _size(self.log.path(first))
                if floors:
                    removed = self.removed
                    mv = self._log_segment(first, floors)
                    if mv:
                        group.append((first, mv, self.removed - removed))
                        grouped += size
                        if grouped >= self.LOG_GROUP_BYTES:
                            self._commit_group(group, floors, cuts, streams)
                            group, grouped = [], 0
                done += size
                self.progress(done, total)
            self._commit_group(group, floors, cuts, streams)
        finally:
            if streams is not None:
                streams.join()  # never left running, whatever happened here
        self._snapshots(cuts)
        self._quarantine(cuts)
        after = self.before - self.saved if self.dry_run else store_bytes(self.d)
        return {"events_removed": self.removed, "bytes_before": self.before,
                "bytes_after": after}

    def _commit_group(self, group: list, floors: dict, cuts, streams) -> None:
        """Move a group of rewritten commit-log segments into place, once
        the stream step is done (its error raised here) and the stream logs
        hold nothing below the floors the segments were written with; when
        one still does (its step did not cut it), the group is written
        again with what the commit log may lose (:meth:`_effective_floor`)."""
        if streams is not None:
            streams.result()
        if not group or self.dry_run:
            return
        eff = {s: self._effective_floor(s, cuts[s]) for s in floors}
        if eff != floors:
            for first, mv, removed in group:
                for tmp, _dst in mv:
                    _unlink_quiet(os.path.join(self.d, tmp))
                self.removed -= removed
            group = [(first, self._log_segment(first, eff), 0) for first, _mv, _r in group]
        self._log_commit([m for _f, mv, _r in group if mv for m in mv])

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
                    if name.startswith(COMPACT_TMP) and not maker_alive(name):
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
                if not rules:
                    break  # all a scan without rules is for: the roll is decided
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


class _Background(threading.Thread):
    """A step run beside the caller; :meth:`result` waits for it and raises
    its error."""

    def __init__(self, fn, *args):
        super().__init__(name="evstore-compact", daemon=True)
        self.fn, self.args, self.error = fn, args, None
        self.start()

    def run(self) -> None:
        try:
            self.fn(*self.args)
        except BaseException as e:  # raised again by result(), in the caller
            self.error = e

    def result(self) -> None:
        self.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


class _Scan:
    def __init__(self):
        self.head = 0
        #: stream -> [first version seen, last version, first version young enough]
        self.streams: dict[str, list] = {}
        self.active_candidates = False




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
    try:  # never through a link, never a FIFO (CorruptStore)
        with open(path, "rb", opener=nofollow) as f:
            data = f.read()
    except (OSError, CorruptStore):
        return False
    return rx.search(data) is not None
