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

Compaction (and repair) may replace files while verify reads them; a file
read half before and half after such a step looks damaged.  Every such step
replaces ``evstore.json`` and runs under a journal, so verify notes both
before and after its run, and checks again when its problems may be that
(``verify``).
"""
from __future__ import annotations

import os
import time

from ..disk import recovery
from ..disk.streamdir import stream_key
from . import layout as L
from ..backends.files.procs import mp_context
from .checks import marker_problem, read_state, snapshot_findings, split_blobs, store_directory
from .stream_check import PROBLEMS_PER_STREAM, StreamResult, check_stream
from .progress import NO_PROGRESS
from .report import Problem, VerifyReport
from .verify_log import LogChecker
from .verify_streams import StreamChecker

__all__ = ["verify", "check_stream", "snapshot_findings", "read_state", "marker_problem",
           "split_blobs", "StreamResult"]

#: How long verify waits for a writer to finish an index entry or a commit
#: it caught half-way, before calling it damage.
SETTLE_SECONDS = 0.5


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
    for _attempt in range(ATTEMPTS):
        before = _moment(directory)
        report = _Verifier(directory, progress or NO_PROGRESS, settle, workers).run()
        if report.ok or not _moved_since(directory, before):
            return report
    report.warnings.append(Problem(
        "compaction", f"a compaction or repair moved files while verify read them, on each of "
        f"{ATTEMPTS} attempts: the problems reported may be its work half done; run verify "
        "again once it is over"))
    return report


#: Runs of verify, each with problems and each overlapping a compaction or
#: repair step, before verify reports what the last one found.
ATTEMPTS = 3


def _moment(directory: str):
    """What a compaction or repair step changes: the identity of
    ``evstore.json`` (replaced after every step) and of the step's journal
    (written before its first move)."""
    from ..backends.files import journal

    try:
        st = os.stat(journal.path(directory))
        step = st.st_ino, st.st_mtime_ns
    except OSError:
        step = None
    return journal.generation(directory), step


def _moved_since(directory: str, before) -> bool:
    """Whether a step may have moved files since ``before``: either changed,
    or a journal is there and a compaction or repair holds its lock (a step
    under way all along; a journal that a crash left, with nobody running,
    moves nothing)."""
    from ..backends.files.compaction_lock import compaction_running

    now = _moment(directory)
    return now != before or (now[1] is not None and compaction_running(directory))


#: Below this much stream-log data, worker processes cost more than they save.
PARALLEL_BYTES = 32 << 20


# --- the verifier -------------------------------------------------------------

class _Verifier(LogChecker, StreamChecker):
    """One verify run: the state and reporting the passes share, and their
    order (``run``).  The passes live in verify_log.py and verify_streams.py."""

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
        from ..backends.files.locking import WriterLock

        lock = WriterLock(os.path.join(self.dir, L.LOCK_FILE), 0)
        try:
            with lock.hold(0):
                journal.finish(self.dir)
        except Exception:  # noqa: BLE001 - read-only media, a held lock: judged as it is
            pass
        finally:
            lock.close()
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
        from ..backends.files.compaction_lock import compaction_running, maker_alive
        from ..backends.files.names import COMPACT_TMP

        running = compaction_running(self.dir)
        for path in L.temp_leftovers(self.dir):
            name = os.path.basename(path)
            if running and name.startswith(COMPACT_TMP) and maker_alive(name):
                continue  # the work in progress of the compaction running now
            self.warn("temp", "temp file left behind by an interrupted write; harmless "
                      "('evstore repair' moves it to quarantine/)", path)
