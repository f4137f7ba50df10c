"""``verify``: read every byte of a store and check it, changing nothing.

What is checked (docs/OPERATIONS.md has the full list with examples):

1. the marker ``evstore.json``, ``sync-state`` and the ``fsync-failed`` flag;
2. the commit log: every frame's checksum, that every payload decodes, that
   positions are dense from 1 and every stream's versions contiguous from 1,
   segment names, and every ``.idx`` entry against the frame it points at;
3. every stream log: checksums, versions contiguous from 1, positions
   increasing, ``.idx`` entries, the ``id`` file -- and that the stream log
   holds exactly the events the commit log gives the stream (a digest of
   versions, positions, times and event bytes on both sides; on a mismatch
   the first differing record is located);
4. records past the committed end of a stream log: one batch that never
   committed is a harmless leftover (a warning); more than that means the
   commit log lost committed batches (an error);
5. snapshots and checkpoints, through their own modules' checks;
6. temp files (warnings).

Writers may be active.  The view is the commit log as it was when the walk
reached each segment (sizes are taken first): records and index entries for
positions after that are not judged, and a half-written frame at the end is a
batch being committed.  Verify never takes the writer lock.
"""
from __future__ import annotations

import os
import time
import zlib
from array import array

import msgpack

from ..disk import bigframe, recovery
from ..disk.format import LOG_MAGIC, STREAM_MAGIC
from ..model import check_stream_id
from ..disk.streamlog import stream_key
from . import layout as L
from .checks import (PROBLEMS_PER_STREAM, StreamResult, check_stream, index_problem,
                     marker_problem, mp_context, or_none, read_index, read_state,
                     iter_blobs, snapshot_findings, split_blobs, store_directory)
from .frames import batch_head, log_segment_order, record_head, walk
from .progress import NO_PROGRESS
from .report import Problem, VerifyReport

__all__ = ["verify", "check_stream", "snapshot_findings", "read_state", "marker_problem",
           "split_blobs", "StreamResult"]

_crc32 = zlib.crc32
_unpackb = msgpack.unpackb

#: How long verify waits for a writer to finish an index entry or a commit
#: it caught half-way, before calling it damage.
SETTLE_SECONDS = 0.5

#: Streams whose first differing record verify locates (the others are
#: reported with the digest mismatch only).
DRILL_LIMIT = 32


def verify(store, *, progress=None, workers: int | None = None,
           settle: float = SETTLE_SECONDS) -> VerifyReport:
    """Check every byte of ``store`` (an EventStore or a store directory).

    Returns a :class:`VerifyReport`; damage never raises.  Raises
    StoreNotFound only when ``store`` is a path with no store at it.
    ``workers``: processes that check stream logs while this one walks the
    commit log; None picks one per CPU for stores over 32 MiB, 1 checks
    everything in this process.
    """
    directory = store_directory(store)
    v = _Verifier(directory, progress or NO_PROGRESS, settle, workers)
    return v.run()


#: Below this much stream-log data, worker processes cost more than they save.
PARALLEL_BYTES = 32 << 20


# --- the verifier -------------------------------------------------------------

class _Verifier:
    def __init__(self, directory: str, progress, settle: float, workers=None):
        self.workers = workers
        self.dir = directory
        self.progress = progress
        self.settle = settle
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.head = 0
        self.versions: dict[str, int] = {}
        self.digests: dict[str, list] = {}
        self.broken_streams: set[str] = set()  # the commit log itself is inconsistent
        self.tail: tuple | None = None  # (segment first, offset, size, reason) torn tail
        self.log_end: tuple[int, int] = (0, 0)  # (segment first, offset after head frame)
        self.last_first = 0
        self.events = 0
        self.nbytes = 0
        self.records = 0
        self._per_file: dict = {}
        #: stream -> its cut (evstore/core/forgetting.py), from cuts.json
        self.cuts: dict = {}
        #: stream -> the last version its stream log no longer holds because
        #: compaction removed it (0: none); the digests skip those versions
        self.bases: dict[str, int] = {}

    def error(self, kind, message, path=None, offset=None, stream=None, version=None,
              position=None):
        n = self._per_file.get(path, 0) + 1
        self._per_file[path] = n
        if n > PROBLEMS_PER_STREAM:
            return
        self.problems.append(Problem(kind, message, L.rel(self.dir, path) if path else None,
                                     offset, stream, version, position))

    def warn(self, kind, message, path=None, offset=None, stream=None, version=None,
             position=None):
        self.warnings.append(Problem(kind, message, L.rel(self.dir, path) if path else None,
                                     offset, stream, version, position))

    def link_check(self) -> None:
        """Symbolic links inside the store: the store refuses to follow them
        (a planted link must not make a write land outside the store), so a
        link where a file or directory belongs is an error to fix by hand."""
        todo = [self.dir]
        while todo:
            d = todo.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue  # the passes below report unreadable directories
            for e in entries:
                if e.is_symlink():
                    try:
                        target = os.readlink(e.path)
                    except OSError:
                        target = "?"
                    self.error("link", f"a symbolic link (to {target}) inside the store; "
                               "evstore does not follow links: replace it with the file or "
                               "directory itself, or remove it", e.path)
                elif e.is_dir(follow_symlinks=False):
                    todo.append(e.path)

    def run(self) -> VerifyReport:
        t0 = time.monotonic()
        d = self.dir
        self.finish_compaction()
        msg = marker_problem(d)
        if msg:
            self.error("marker", msg, os.path.join(d, L.MARKER))
        # sync-state is read before the log, so that a writer advancing it
        # meanwhile can only make it smaller than what the log walk sees.
        self.boot, self.synced, state_msg = read_state(d)
        if state_msg:
            self.warn("sync-state", f"sync-state is {state_msg}; harmless: the next writer "
                      "re-checks every stream log against the commit log", os.path.join(d, L.STATE_FILE))
        flag = os.path.join(d, L.FSYNC_FAILED)
        why = recovery.read_failed_flag(d)
        if why is not None:
            self.error("fsync-failed", f"an fsync failed earlier ({why}); "
                       "writes are refused until 'evstore repair' re-syncs the store", flag)
        total, stream_bytes = self._total_bytes()
        self.progress.begin("verify", total_bytes=total)
        pool = None
        try:
            pool = self.start_workers(stream_bytes)
            self.link_check()
            self.forgetting()
            self.log_pass()
            self.check_state()
            self.stream_pass(pool)
            self.feature_checks()
            self.temp_check()
        except OSError as e:
            self.error("io", f"cannot read the store: {e.strerror or e}", getattr(e, "filename", None))
        finally:
            if pool is not None:
                pool[0].shutdown(wait=True, cancel_futures=True)
            self.progress.end()
        for path, n in self._per_file.items():
            if n > PROBLEMS_PER_STREAM:
                self.problems.append(Problem(
                    "more", f"... and {n - PROBLEMS_PER_STREAM} more problems in this file",
                    L.rel(self.dir, path) if path else None))
        stats = {"head": self.head, "events": self.head, "streams": len(self.versions),
                 "records": self.records, "bytes_checked": self.nbytes,
                 "seconds": round(time.monotonic() - t0, 3)}
        return VerifyReport(os.path.abspath(d), self.problems, self.warnings, stats)

    def _total_bytes(self) -> tuple[int, int]:
        total = streams = 0
        for root, _dirs, files in os.walk(self.dir):
            for f in files:
                if f.endswith(L.LOG_SEG):
                    total += L.file_size(os.path.join(root, f))
                elif f.endswith(L.STREAM_SEG):
                    n = L.file_size(os.path.join(root, f))
                    total += n
                    streams += n
        return total, streams

    def start_workers(self, stream_bytes: int):
        """Summarise stream directories in worker processes (fastscan) while
        this process walks the commit log."""
        workers = self.workers
        if workers is None:
            workers = (os.cpu_count() or 1) if stream_bytes >= PARALLEL_BYTES else 1
        if workers <= 1:
            return None
        ctx = mp_context()
        if ctx is None:
            return None
        from concurrent.futures import ProcessPoolExecutor

        from .fastscan import summarize_many

        root = os.path.join(self.dir, L.STREAMS_DIR)
        paths = [p for k, p in L.stream_dirs(root) if k is not None]
        if not paths:
            return None
        n = max(1, min(len(paths), workers * 8))
        chunks = [paths[i::n] for i in range(n)]
        ex = ProcessPoolExecutor(workers, mp_context=ctx)
        futures = [ex.submit(summarize_many, c) for c in chunks]
        return ex, futures

    def finish_compaction(self) -> None:
        """A compaction step interrupted by a crash (``compacting`` is
        there) is finished by the next writer; verify lets a writer handle
        do it now, when the writer lock is free (the one time verify writes,
        as a reader's first open after a reboot may), so that it judges the
        store every reader will see from now on."""
        from ..backends.files import journal

        if not journal.pending(self.dir):
            return
        try:
            from ..backends.files.engine import FileBackend
            FileBackend(self.dir, create=False, lock_timeout=0).close()
        except Exception:  # noqa: BLE001 - read-only media, a held lock: judged as it is
            pass
        if journal.pending(self.dir):
            self.warn("compaction", "a compaction step was interrupted; the next writer "
                      "finishes it (until then readers see its files half moved, which they "
                      "read correctly)", journal.path(self.dir))

    # -- what compaction removed ------------------------------------------------------
    def forgetting(self) -> None:
        """Read the cuts, and where each cut stream's log starts now.

        A stream log may start after version 1 only where compaction removed
        the versions before it: at or below its cut's floor.  The commit log
        proves its own removals (gap frames account for every position it
        lost); ``cuts.json`` proves the stream logs'."""
        from ..backends.files.forget import load_cuts
        from ..errors import CorruptStore

        path = os.path.join(self.dir, L.CUTS_FILE)
        try:
            self.cuts = load_cuts(self.dir)
        except CorruptStore as e:
            self.error("cuts", str(e).split("; run", 1)[0], path)
            return
        except OSError as e:
            self.error("cuts", f"cannot read: {e.strerror or e}", path)
            return
        root = os.path.join(self.dir, L.STREAMS_DIR)
        for stream, cut in self.cuts.items():
            if cut.floor <= 1:
                continue
            key = stream_key(stream)
            firsts = L.numbered(L.listdir(os.path.join(root, key[:2], key)), L.STREAM_SEG)
            # a log starting above the floor lacks readable versions: the
            # base stays at the floor, and the stream check says so; a log
            # with no segment holds nothing below the floor
            start = min(firsts[0] if firsts else cut.floor, cut.floor)
            if start > 1:
                self.bases[stream] = start - 1

    def _removed_ok(self, stream: str, fv: int) -> bool:
        """May the commit log hold ``stream`` from version ``fv`` on, the
        versions before it removed?"""
        cut = self.cuts.get(stream)
        return cut is not None and fv <= cut.floor

    # -- the commit log -----------------------------------------------------------------
    def log_pass(self) -> None:
        ldir = os.path.join(self.dir, L.LOG_DIR)
        if not os.path.isdir(ldir):
            self.error("log", "the log/ directory is missing", ldir)
            return
        names = L.listdir(ldir)
        firsts = L.numbered(names, L.LOG_SEG)
        segs = {f"{f:016d}{L.LOG_SEG}" for f in firsts}
        for name in names:
            if name in segs:
                continue
            p = os.path.join(ldir, name)
            if L.is_temp(name):
                continue  # reported by temp_check
            if name.endswith(L.LOG_IDX) and name[:-len(L.LOG_IDX)] + L.LOG_SEG in segs:
                continue
            self.warn("log", "unexpected file in log/ (an index without its segment?)", p)
        sizes = {f: L.file_size(L.seg_path(ldir, f, L.LOG_SEG)) for f in firsts}
        expected = 1
        last_us = 0
        versions = self.versions
        digests = self.digests
        holes = False
        last_bad = None
        spans = []  # (first, last position, path) of each segment's accepted frames
        # in the order of the positions held: a stray copy under a wrong name
        # comes after the real segment (see log_segment_order), and is
        # reported as one problem, not as real segments that repeat it
        order = log_segment_order(ldir, firsts, L.LOG_SEG)
        for k, (first, _fp0, misnamed) in enumerate(order):
            last_seg = k == len(order) - 1
            path = L.seg_path(ldir, first, L.LOG_SEG)
            idx_bytes = read_index(L.seg_path(ldir, first, L.LOG_IDX))
            last_bad = None
            size = sizes[first]
            if last_seg:  # the view of the live segment: what is there now
                size = L.file_size(path)
            entries = array("Q")
            sound = True
            first_frame = True
            repeats = []  # [offset, first, last position, stream, version] of a run of repeats
            held = []  # positions accepted from this segment: [first, last]
            pend_events, pend_from = 0, 0
            fd = os.open(path, L.RDONLY)
            try:
                for ok, off, end, x in walk(fd, LOG_MAGIC, size, big=True):
                    if not ok:
                        if last_seg and end == size:
                            self.tail = (first, off, size, x)
                        else:
                            self.error("log", f"damaged frame, {end - off} bytes ({x}); the "
                                       "events in it are read from their stream-log copies by "
                                       "'evstore repair'", path, off, position=expected)
                            last_bad = len(self.problems) - 1
                            sound = False
                        continue
                    try:
                        stream, fv, fp, us, n, hl = batch_head(x)
                        if stream == "":
                            if hl != len(x):
                                raise ValueError("a gap frame holds more than its head")
                        else:
                            _check_payload(x)
                            check_stream_id(stream, new=False)
                    except Exception as e:  # noqa: BLE001 - any decoding failure is damage here
                        self.error("log", f"frame passes its checksum but does not decode ({e})",
                                   path, off, position=expected)
                        sound = False
                        continue
                    if first_frame:
                        first_frame = False
                        if misnamed:
                            sound = False
                    if fp != expected:
                        sound = False
                        if fp < expected:
                            if repeats and repeats[2] + 1 == fp:
                                repeats[2] = fp + n - 1
                            else:
                                self._repeats(path, repeats, spans)
                                repeats = [off, fp, fp + n - 1, stream, fv]
                            continue
                        gap = (f"{expected}" if fp - 1 == expected else f"{expected}..{fp - 1}")
                        if last_bad is not None and last_bad < len(self.problems):
                            p = self.problems[last_bad]  # the damage explains the gap
                            self.problems[last_bad] = Problem(
                                p.kind, p.message.replace("damaged frame,", f"damaged frame "
                                                          f"(positions {gap}),", 1),
                                p.file, p.offset, p.stream, p.version, p.position)
                        else:
                            self.error("log", f"positions {gap} are missing before this frame",
                                       path, off, position=expected)
                        holes = True
                    last_bad = None
                    if stream == "":
                        # a gap frame: positions compaction removed, accounted for
                        if us < last_us:
                            self.warn("log", "recorded_at goes backwards", path, off,
                                      position=fp)
                        else:
                            last_us = us
                        entries.extend([off] * n)
                        expected = fp + n
                        held = [held[0] if held else fp, expected - 1]
                        self.head = expected - 1
                        self.log_end = (first, end)
                        continue
                    prev = versions.get(stream, 0)
                    # a jump is sound only below the stream's floor: the
                    # versions before fv are removed (those still here, not
                    # yet compacted, are not readable either)
                    if fv != prev + 1 and not (fv > prev and self._removed_ok(stream, fv)):
                        why = (" (the versions between are in the damaged or missing frames "
                               "above)" if holes and fv > prev + 1 else "")
                        self.error("log", f"stream {stream!r} jumps from version {prev} to "
                                   f"{fv}{why}", path, off, stream, fv, fp)
                        self.broken_streams.add(stream)
                    if us < last_us:
                        self.warn("log", "recorded_at goes backwards", path, off, stream, fv, fp)
                    else:
                        last_us = us
                    versions[stream] = fv + n - 1
                    dg = digests.get(stream)
                    if dg is None:
                        dg = digests[stream] = [0, 0, 0, 0]
                    skip = min(max(self.bases.get(stream, 0) + 1 - fv, 0), n)
                    if skip == 0:
                        dg[0] += n
                        dg[1] += n * fp + n * (n - 1) // 2
                        dg[2] += n * us
                        dg[3] = x.crc_from(hl, dg[3]) if isinstance(x, bigframe.BigPayload) \
                            else _crc32(x[hl:], dg[3])
                    elif skip < n:  # the stream log no longer holds the first ``skip``
                        k, q = n - skip, fp + skip
                        dg[0] += k
                        dg[1] += k * q + k * (k - 1) // 2
                        dg[2] += k * us
                        for i, blob in enumerate(iter_blobs(x, hl, n)):
                            if i >= skip:
                                dg[3] = _crc32(blob, dg[3])
                    if n == 1:
                        entries.append(off)
                    else:
                        entries.extend([off] * n)
                    expected = fp + n
                    if held:
                        held[1] = expected - 1
                    else:
                        held = [fp, expected - 1]
                    self.head = expected - 1
                    self.log_end = (first, end)
                    pend_events += n
                    if pend_events >= 4096:
                        self.progress.advance(events=pend_events, nbytes=end - pend_from)
                        pend_events, pend_from = 0, end
                if misnamed:
                    what = ("and holds only positions that other segments hold: a stray copy "
                            "(duplicated or misnamed segment); 'evstore repair' removes it"
                            if not held else "which is not its name: a misnamed segment; 'evstore repair' moves "
                            "its frames under the right name")
                    self.error("log", f"segment named for position {first} starts with position "
                               f"{_fp0} {what}", path, 0, position=_fp0)
                self._repeats(path, repeats, spans)
                if held:
                    spans.append((held[0], held[1], path))
                self.nbytes += size
                self.progress.advance(events=pend_events, nbytes=size - pend_from)
                if sound and entries:
                    self._check_log_index(ldir, first, path, entries, last_seg, size, idx_bytes)
                elif sound and not entries and not last_seg:
                    self.error("log", "empty segment", path, 0)
            finally:
                os.close(fd)
        self.last_first = firsts[-1] if firsts else 0
        if self.tail is not None:
            first, off, size, reason = self.tail
            path = L.seg_path(ldir, first, L.LOG_SEG)
            if self._tail_now_valid():
                self.tail = None
            elif self.synced > self.head:
                self.error("log", f"the last {size - off} bytes of the commit log are damaged "
                           f"({reason}), and sync-state shows they held committed events "
                           f"(up to position {self.synced})", path, off, position=self.head + 1)
            elif self._tail_is_torn(path, off):
                self.warn("log", f"{size - off} bytes of an append that never committed at the "
                          f"end of the commit log ({reason}); harmless: the next writer moves "
                          "them to quarantine/", path, off, position=self.head + 1)
            else:
                self.error("log", f"the last frame of the commit log is damaged ({reason}), "
                           "not torn: it may be an acknowledged batch, so writers refuse to "
                           "cut it; 'evstore repair' restores it from its stream-log copy or "
                           "moves it to quarantine/", path, off, position=self.head + 1)
        self.events = self.head

    def _repeats(self, path, run, spans) -> None:
        """One problem for a run of frames that repeat positions already
        present, naming the segments that hold them."""
        if not run:
            return
        off, a, b, stream, fv = run
        where = sorted({L.rel(self.dir, p) for lo, hi, p in spans if lo <= b and a <= hi})
        self.error("log", f"frames repeat positions {a}..{b}, already held by "
                   f"{', '.join(where) or 'the frames before them'} (a duplicated segment?)",
                   path, off, stream, fv, a)
        run.clear()

    def _check_log_index(self, ldir, first, path, entries, last_seg, size, idx_bytes) -> None:
        idx = L.seg_path(ldir, first, L.LOG_IDX)
        if idx_bytes and len(idx_bytes) % 8 and last_seg:
            self.warn("log-index", "index ends in a partial entry (a torn write); harmless: "
                      "the next writer rewrites it", idx)
            idx_bytes = idx_bytes[:len(idx_bytes) - len(idx_bytes) % 8]
        msg = index_problem(idx, entries, None, "position", first, idx_bytes)
        if msg and last_seg:
            # A writer appends the frame, then the index entries: give it a moment.
            deadline = time.monotonic() + self.settle
            marks = []
            while msg and time.monotonic() < deadline and not self._quiet(marks):
                marks.append((L.file_size(path), L.file_size(idx)))
                time.sleep(0.02)
                msg = index_problem(idx, entries, None, "position", first, torn_ok=True)
                if msg and "past the last" in msg and L.file_size(path) > size:
                    msg = None  # entries of frames committed after our view
        if msg and last_seg and self._rebooted():
            # The last segment's index is not synced per commit: a power cut
            # may leave any of it; the first writer after a reboot rebuilds it.
            self.warn("log-index", f"{msg}; harmless after a reboot: the next writer rebuilds "
                      "this index from its segment", idx)
        elif msg and last_seg and (msg.startswith("index ends after") or msg == "index file is missing"):
            # A writer killed between its frame and the frame's index entries:
            # readers scan past the gap and the next writer rebuilds it.
            self.warn("log-index", f"{msg}; harmless: the next writer rebuilds it", idx)
        elif msg:
            self.error("log-index", msg, idx)

    def _tail_is_torn(self, path: str, off: int) -> bool:
        """What a writer would cut by itself (core.store, docs/FORMAT.md
        "Crashes"): a short last frame, or, after a reboot, one torn the
        way a power cut tears."""
        from ..disk.recovery import current_boot_id
        from ..disk.segment import scan, torn_by_power_cut

        fd = os.open(path, L.RDONLY)
        try:
            status = scan(fd, off, LOG_MAGIC).status
            if status == "short":
                return True
            # as the writer decides: only a known, new boot id is a reboot
            rebooted = current_boot_id() is not None and self._rebooted()
            return status == "damaged" and rebooted and torn_by_power_cut(fd, off, LOG_MAGIC)
        finally:
            os.close(fd)

    def _tail_now_valid(self) -> bool:
        """A half-written frame at the end may be a commit in progress."""
        if self.tail is None:
            return False
        first, off = self.tail[0], self.tail[1]
        path = L.seg_path(os.path.join(self.dir, L.LOG_DIR), first, L.LOG_SEG)
        deadline = time.monotonic() + self.settle
        sizes = []
        while True:
            try:
                fd = os.open(path, L.RDONLY)
            except OSError:
                return False
            try:
                size = os.fstat(fd).st_size
                for ok, _o, _e, _x in walk(fd, LOG_MAGIC, size, off, big=True):
                    if ok:
                        return True
                    break
            finally:
                os.close(fd)
            sizes.append(size)
            if time.monotonic() >= deadline or self._quiet(sizes):
                return False
            time.sleep(0.02)

    def _quiet(self, marks: list) -> bool:
        """Nothing changed over the last few polls: no writer is finishing
        anything, so waiting longer will not change the verdict."""
        return len(marks) >= 4 and len(set(marks[-4:])) == 1

    def current_head(self) -> int:
        """The head now: our view's head plus whatever was committed since."""
        ldir = os.path.join(self.dir, L.LOG_DIR)
        head = self.head
        first, off = self.log_end
        if not first:
            firsts = L.numbered(L.listdir(ldir), L.LOG_SEG)
            if not firsts:
                return head
            first, off = firsts[0], 0
        for f in [x for x in L.numbered(L.listdir(ldir), L.LOG_SEG) if x >= first]:
            path = L.seg_path(ldir, f, L.LOG_SEG)
            try:
                fd = os.open(path, L.RDONLY)
            except OSError:
                break
            try:
                for ok, _o, _e, x in walk(fd, LOG_MAGIC, os.fstat(fd).st_size,
                                          off if f == first else 0, big=True):
                    if not ok:
                        break
                    try:
                        _s, _fv, fp, _us, n, _hl = batch_head(x)
                    except (ValueError, IndexError, UnicodeDecodeError):
                        break
                    if fp == head + 1:
                        head = fp + n - 1
            finally:
                os.close(fd)
        return head

    def check_state(self) -> None:
        if self.synced > self.head:
            self.error("sync-state", f"sync-state says stream logs were synced up to position "
                       f"{self.synced}, but the commit log ends at {self.head}: committed "
                       "batches are missing from the commit log",
                       os.path.join(self.dir, L.STATE_FILE), position=self.head + 1)

    # -- stream logs ------------------------------------------------------------------------
    def stream_pass(self, pool=None) -> None:
        root = os.path.join(self.dir, L.STREAMS_DIR)
        if not os.path.isdir(root):
            self.error("stream", "the streams/ directory is missing", root)
            return
        known = {stream_key(s): s for s in self.versions}
        digests = {s: tuple(d) for s, d in self.digests.items() if s not in self.broken_streams}
        for s in self.broken_streams:
            digests[s] = (self.versions[s], None, None, None)
        pending = self._reconcile_pending()
        seen = set()
        beyond_results = {}
        mismatched = []
        summaries = {}
        if pool is not None:
            try:
                for fut in pool[1]:
                    summaries.update(fut.result())
            except Exception:  # noqa: BLE001 - a lost worker only costs speed
                summaries = {}
        from .fastscan import judge, summarize

        for key, path in L.stream_dirs(root):
            if key is None:
                if not L.is_temp(os.path.basename(path)):
                    self.warn("stream", "unexpected entry in streams/", path)
                continue
            s = summaries[path] if path in summaries else or_none(summarize, path)
            if s is not None:
                sid = s[1]
                dg = digests.get(sid)
                base = self.bases.get(sid, 0)
                beyond, ok = judge(s, base + (dg[0] if dg else 0), dg, base)
                if ok and sid not in self.broken_streams:
                    seen.add(key)
                    self.nbytes += s[2]
                    self.records += s[3]
                    self.progress.advance(nbytes=s[2])
                    if beyond:
                        r = StreamResult(key, path, sid, found=base + (dg[0] if dg else 0))
                        r.beyond = beyond
                        beyond_results[sid] = r
                    continue
            r = check_stream(self.dir, key, path, self.head, known, digests, self.progress,
                             self.bases)
            self.nbytes += r.nbytes
            self.records += r.records
            seen.add(key)
            stream = r.stream
            for p in r.warnings:
                self.warnings.append(p)
            for p in r.problems:
                if pending and p.kind == "stream-index":
                    self.warnings.append(Problem(
                        p.kind, p.message + " (an index written since the last sync, before a "
                        "reboot; the next writer rebuilds it)", p.file, p.offset, p.stream,
                        p.version, p.position))
                    continue
                if pending and p.kind == "stream" and "the stream log ends at version" in p.message:
                    self.warnings.append(Problem(
                        "stream", p.message + " (copies not yet written back after a reboot; "
                        "the next writer replays them from the commit log)", p.file, p.offset,
                        p.stream, p.version, p.position))
                    continue
                self.problems.append(p)
            if r.mismatch and stream not in self.broken_streams:
                mismatched.append(r)
            if r.beyond and stream is not None:
                beyond_results[stream] = r
        for stream in self.versions:
            cut = self.cuts.get(stream)
            if cut is not None and self.versions[stream] < cut.floor:
                continue  # every event of it is removed: compaction removes the directory
            if stream_key(stream) not in seen:
                (self.warn if pending else self.error)(
                    "stream", f"stream has {self.versions[stream]} events in the commit log but "
                    "no stream directory", os.path.join(root, stream_key(stream)[:2],
                                                        stream_key(stream)), stream)
        if mismatched:
            self.drill(mismatched)
        if beyond_results:
            self.check_beyond(beyond_results)

    def _rebooted(self) -> bool:
        """Has the machine restarted since sync-state was written (or is
        there no telling)?  Then unsynced writes may have been torn."""
        from ..disk.recovery import current_boot_id

        boot = current_boot_id()
        return self.boot != boot or boot is None

    def _reconcile_pending(self) -> bool:
        """After a reboot, stream logs may lack copies the next writer replays."""
        return self._rebooted() and self.synced < self.head

    def check_beyond(self, beyond: dict) -> None:
        """Records after a stream's committed tail.  One batch per stream is
        the leftover of an append that never committed (the core ignores it
        and its next writer cuts it).  Anything else -- several batches, a
        batch that does not continue the stream, batches past the log's end
        that chain into each other -- means the commit log lost batches."""
        head2 = None
        candidates = []
        for stream, r in beyond.items():
            recs = [b for b in r.beyond if b[0] is not None]
            if not recs:
                continue
            if head2 is None and any(b[1] > self.head for b in recs):
                head2 = self.current_head()
            top = self.head if head2 is None else head2
            # records committed after our view of the log are not judged
            judged = [b for b in recs if b[1] <= self.head or b[1] > top]
            if not judged:
                continue
            runs = _runs(judged)
            v, p, _us, first, off, _e = runs[0][0]
            spath = L.seg_path(r.path, first, L.STREAM_SEG)
            torn_first = r.beyond[0][0] is None  # damaged bytes right after the tail
            if torn_first and self._rebooted():
                # A power cut tore an append that never committed; the
                # stream's next writer cuts from the damaged bytes on.
                self.warn("leftover", f"{len(judged)} records after a torn append past the "
                          f"stream's committed tail (version {self.versions.get(stream, 0)}), "
                          "left by a power cut; harmless: the stream's next writer moves them "
                          "to quarantine/", spath, off, stream, v, p)
                continue
            if len(runs) > 1 or (len(judged) == len(recs)
                                 and judged[0][0] != self.versions.get(stream, 0) + 1):
                self.error("stream", f"{len(judged)} records after the stream's committed tail "
                           f"(version {self.versions.get(stream, 0)}) do not form one batch "
                           "continuing it: a duplicated segment, or batches the commit log "
                           "has lost", spath, off, stream, v, p)
                continue
            candidates.append((runs[0][0][1], runs[0][-1][1], stream, runs[0], r))
        if not candidates:
            return
        top = self.head if head2 is None else head2
        if any(a == top + 1 for a, *_ in candidates):
            # maybe a commit in progress: give the writer a moment
            deadline = time.monotonic() + self.settle
            heads = [top]
            while time.monotonic() < deadline and not self._quiet(heads):
                time.sleep(0.02)
                top = self.current_head()
                heads.append(top)
                if not any(a == top + 1 for a, *_ in candidates):
                    break
            candidates = [c for c in candidates if c[0] <= self.head or c[0] > top]
        starts = {c[0] for c in candidates}
        for a, b, stream, run, r in candidates:
            v, p, _us, first, off, _end = run[0]
            spath = L.seg_path(r.path, first, L.STREAM_SEG)
            if a <= self.head:
                self.warn("leftover", f"{len(run)} records at positions {a}..{b} that the commit "
                          "log gives to other streams: an append that never committed; "
                          "harmless, the next writer of this stream moves them to quarantine/",
                          spath, off, stream, v, p)
            elif a > top + 1 or (b + 1) in starts:
                how = ("more batches follow them" if (b + 1) in starts
                       else "do not start right after it")
                self.error("stream", f"records at positions {a}..{b} lie past the commit log's "
                           f"end ({top}) and {how}: the commit log has lost committed batches",
                           spath, off, stream, v, p)
            elif self.synced >= b:
                self.error("stream", f"records at positions {a}..{b} lie past the commit log's "
                           f"end ({top}), and sync-state shows they were committed",
                           spath, off, stream, v, p)
            else:
                self.warn("leftover", f"{len(run)} records at positions {a}..{b} past the commit "
                          "log's end: an append that never committed; harmless, the next writer "
                          "of this stream moves them to quarantine/", spath, off, stream, v, p)

    def drill(self, results) -> None:
        """Locate the first record where a stream log and the commit log differ."""
        todo = {r.stream: r for r in results[:DRILL_LIMIT]}
        for r in results[DRILL_LIMIT:]:
            self.error("consistency", "the stream log's records differ from the commit log's "
                       "events", r.path, stream=r.stream)
        its = {s: _stream_records(r.path, self.head) for s, r in todo.items()}
        ldir = os.path.join(self.dir, L.LOG_DIR)
        for first in L.numbered(L.listdir(ldir), L.LOG_SEG):
            if not its:
                break
            path = L.seg_path(ldir, first, L.LOG_SEG)
            fd = os.open(path, L.RDONLY)
            try:
                for ok, off, _end, x in walk(fd, LOG_MAGIC, os.fstat(fd).st_size, big=True):
                    if not ok:
                        continue
                    try:
                        stream, fv, fp, us, n, hl = batch_head(x)
                    except (ValueError, IndexError, UnicodeDecodeError):
                        continue
                    if fp > self.head:
                        break
                    it = its.get(stream)
                    if it is None:
                        continue
                    blobs = iter_blobs(x, hl, n)
                    for i in range(n):
                        if fv + i <= self.bases.get(stream, 0):
                            next(blobs)
                            continue  # removed from the stream log by compaction
                        rec = next(it, None)
                        want = (fv + i, fp + i, us, next(blobs))
                        if rec is None or rec[2:] != want:
                            if rec is None:
                                self.error("consistency", "stream log ends before this event of "
                                           "the commit log", path, off, stream, fv + i, fp + i)
                            else:
                                what = _diff(rec[2:], want)
                                self.error("consistency", f"record differs from the commit log's "
                                           f"event ({what}; commit-log frame at "
                                           f"{L.rel(self.dir, path)}@{off})",
                                           rec[0], rec[1], stream, rec[2], rec[3])
                            del its[stream]
                            break
            finally:
                os.close(fd)
        for stream in its:
            self.error("consistency", "the stream log's records differ from the commit log's "
                       "events", todo[stream].path, stream=stream)

    # -- snapshots, checkpoints, temp files ----------------------------------------------
    def feature_checks(self) -> None:
        """Snapshots belong to their feature module, which knows their format;
        checkpoints and settings to the file backend's modules
        (evstore.backends.files.checkpoints and .settings).  A module may offer ``verify_files(store_dir,
        versions, head)`` yielding problems (dicts with ``severity`` "error"
        or "warning", or Problems); snapshots are otherwise checked through
        ``SnapshotStore.load`` (:func:`snapshot_findings`)."""
        import importlib

        for modname, sub in (("evstore.features.snapshots", L.SNAPSHOTS_DIR),
                             ("evstore.backends.files.checkpoints", L.CHECKPOINTS_DIR)):
            path = os.path.join(self.dir, sub)
            if not os.path.isdir(path):
                continue
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                mod = None
            fn = getattr(mod, "verify_files", None)
            kind = sub.rstrip("s")
            if fn is None and sub == L.SNAPSHOTS_DIR and hasattr(mod, "SnapshotStore"):
                moved = self.current_head() != self.head
                for spath, msg, stream, version in snapshot_findings(self.dir, self.versions,
                                                                     live=moved):
                    self.error("snapshot", msg, spath, stream=stream, version=version)
                continue
            if fn is None:
                self.warn(kind, f"{sub}/ was not checked: this evstore has no checker for it "
                          f"({modname}.verify_files)", path)
                continue
            try:
                found = list(fn(self.dir, dict(self.versions), self.head))
            except Exception as e:  # noqa: BLE001 - a checker's crash is a finding, not ours
                self.error(kind, f"checking {sub}/ failed: {type(e).__name__}: {e}", path)
                continue
            self.findings(kind, found)
        from ..backends.files.settings import verify_file

        self.findings("settings", verify_file(self.dir))

    def findings(self, kind: str, found) -> None:
        """Record what a feature module's checker reported."""
        for item in found:
            if isinstance(item, Problem):
                self.problems.append(item)
                continue
            item = dict(item)
            sev = item.pop("severity", "error")
            p = Problem(item.pop("kind", kind), item.pop("message", "?"),
                        item.get("file"), item.get("offset"), item.get("stream"),
                        item.get("version"), item.get("position"))
            (self.warnings if sev == "warning" else self.problems).append(p)

    def temp_check(self) -> None:
        for path in L.temp_leftovers(self.dir):
            self.warn("temp", "temp file left behind by an interrupted write; harmless "
                      "('evstore repair' moves it to quarantine/)", path)


def _check_payload(x) -> None:
    """Raise unless a commit-log payload decodes whole into a batch's shape.
    A big one (bigframe.BigPayload) is decoded an event at a time."""
    if not isinstance(x, bigframe.BigPayload):
        _check_items(_unpackb(x, raw=False, strict_map_key=False))
        return
    up = msgpack.Unpacker(x.reader(), raw=False, strict_map_key=False,
                          read_size=1 << 16, max_buffer_size=max(x.size, 1 << 16))
    n = up.read_array_header()
    if n < 8 or (n - 4) % 4:
        raise ValueError("payload has the wrong shape")
    for _ in range(4):
        up.unpack()
    for _ in range((n - 4) // 4):
        if type(up.unpack()) is not str:
            raise ValueError("an event id is not a string")
        t = up.unpack()
        if type(t) is not str or not t:
            raise ValueError("an event type is not a non-empty string")
        up.unpack()
        up.unpack()
    if up.tell() != x.size:
        raise ValueError("extra data after the batch")


def _check_items(items) -> None:
    if not isinstance(items, list) or len(items) < 8 or (len(items) - 4) % 4:
        raise ValueError("payload has the wrong shape")
    for eid in items[4::4]:
        if type(eid) is not str:
            raise ValueError("an event id is not a string")
    for t in items[5::4]:
        if type(t) is not str or not t:
            raise ValueError("an event type is not a non-empty string")


def _runs(recs):
    """Group (v, p, us, ...) records into runs of one batch each."""
    out = []
    for rec in recs:
        if out:
            last = out[-1][-1]
            if rec[0] == last[0] + 1 and rec[1] == last[1] + 1 and rec[2] == last[2]:
                out[-1].append(rec)
                continue
        out.append([rec])
    return out


def _stream_records(path: str, head: int):
    """Yield (file, offset, version, position, us, blob) of a stream's
    committed records (position <= head), skipping damaged bytes."""
    for first in L.numbered(L.listdir(path), L.STREAM_SEG):
        spath = L.seg_path(path, first, L.STREAM_SEG)
        fd = os.open(spath, L.RDONLY)
        try:
            for ok, off, _end, x in walk(fd, STREAM_MAGIC, os.fstat(fd).st_size):
                if not ok:
                    continue
                try:
                    v, p, us, hl = record_head(x)
                except (ValueError, IndexError):
                    continue
                if p > head:
                    return
                yield spath, off, v, p, us, bytes(x[hl:])
        finally:
            os.close(fd)


def _diff(have, want) -> str:
    names = ("version", "position", "recorded_at", "event data")
    for name, a, b in zip(names, have, want):
        if a != b:
            if name == "event data":
                return "its id, type, data or metadata differ"
            return f"{name} {a} where the commit log has {b}"
    return "?"


