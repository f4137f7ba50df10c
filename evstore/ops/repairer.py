"""``repair``: bring a damaged store back to its longest sound state.

Every event is stored twice: in its batch's commit-log frame and as a record
in its stream log.  Repair uses that.  Under the writer lock, it

A. plans the commit log: walks every segment, keeping each valid frame that
   continues the positions and its stream's versions.  Segments are walked in
   the order of the positions they hold, not of their names, so that a stray
   copy under a wrong name (``81.log`` copied to ``2.log``) comes after the
   real segment and is what gets removed as repeated positions; a misnamed
   segment that is the only copy of its frames is rewritten under its right
   name.  A gap -- a damaged frame, a lost segment, a frame that contradicts
   its stream -- is refilled first from a valid frame for those positions met
   elsewhere in the log (such a stray copy), then from the stream logs'
   copies of the events at those positions.  A run of
   copies is restored as a batch only when its end is proven (the next
   position holds another batch, or the next intact frame): a batch is never
   restored in part.  Past the log's end, copies are restored only when
   *proven committed*: a batch followed by another batch built on it (a
   writer only appends after a commit), or the last batch when
   ``sync-state`` says the store had committed up to exactly its end.
   Where some position has no intact copy left, the store keeps everything
   before it ("the longest sound state": positions stay dense), and every
   intact event after it is taken out and written, decoded, to the
   quarantine's ``removed-events.ndjson``; the report lists the lost
   positions and the removed events.
B. rebuilds every stream log that differs from the commit log (damaged
   records, missing versions, uncommitted leftovers, duplicated segments),
   segment by segment: a segment that already holds exactly the right bytes
   is not touched;
C. rebuilds wrong indexes, moves temp leftovers aside, rewrites a damaged
   marker, and after re-syncing the store clears ``fsync-failed``.

Removed bytes go to ``STORE/quarantine/repair-*/`` first, fsynced; files are
replaced by writing a temp file and renaming it.  So repair can be
interrupted at any point and run again.  A sound store is left byte for
byte as it was.  docs/OPERATIONS.md walks through each case.
"""
from __future__ import annotations

import os

from ..disk.format import FORMAT_VERSION
from ..disk.recovery import write_atomic
from ..disk.streamdir import stream_key
from . import layout as L
from .progress import NO_PROGRESS
from .quarantine import Quarantine
from .report import Action, RepairReport
from .checks import read_state, store_directory
from .verifier import verify
from .repair_common import Copy, _bytes_under
from .repair_fill import GapFiller
from .repair_plan import LogPlanner
from .repair_streams import StreamRebuilder
from .repair_tidy import Tidier


def repair(store, *, dry_run: bool = False, lock_timeout: float = 30.0,
           progress=None) -> RepairReport:
    """Repair ``store`` (an EventStore or a store directory) in place.

    Holds the writer lock throughout, and first the compaction lock (a
    compaction running beside it writes temp files, which repair would move
    aside as leftovers); StoreLocked after ``lock_timeout``.
    With ``dry_run`` nothing is written, and the report says what would be
    done.  Other handles on the store should be closed: repair may replace
    files they hold open.
    """
    from ..errors import CorruptStore
    from ..backends.files.compaction_lock import compaction_lock
    from ..backends.files.locking import WriterLock

    directory = store_directory(store)
    newer = _newer_format(directory)
    if newer:
        raise CorruptStore(f"{directory}: the marker says format version {newer}; this evstore "
                           f"repairs version {FORMAT_VERSION} only (use a newer evstore)")
    lock = WriterLock(os.path.join(directory, L.LOCK_FILE), lock_timeout)
    try:
        with compaction_lock(directory, lock_timeout, missing_ok=True), lock.hold(lock_timeout):
            planted = L.links(directory)
            if planted:
                # Repair moves, rewrites and removes files: through a link it
                # would do so outside the store.  Nothing is changed until a
                # person has looked at them.
                names = ", ".join(L.rel(directory, p) for p in planted[:5])
                more = f" and {len(planted) - 5} more" if len(planted) > 5 else ""
                raise CorruptStore(
                    f"{directory}: symbolic links inside the store ({names}{more}); evstore "
                    "does not follow links and repair changes nothing while they are there: "
                    "replace each with the file or directory itself, or remove it, then run "
                    "'evstore repair' again")
            odd = L.specials(directory)
            if odd:  # the same refusal: a person decides what they were
                names = ", ".join(L.rel(directory, p) for p in odd[:5])
                more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
                raise CorruptStore(
                    f"{directory}: FIFOs, sockets or devices inside the store ({names}{more}); "
                    "evstore makes none and repair changes nothing while they are there: "
                    "remove each, then run 'evstore repair' again")
            return _Repair(directory, dry_run, progress or NO_PROGRESS).run()
    finally:
        close = getattr(lock, "close", None)
        if close:
            close()


def _newer_format(directory: str):
    import json

    try:
        with open(os.path.join(directory, L.MARKER), "rb", opener=L.opener) as f:
            meta = json.loads(f.read())
        v = meta.get("format_version")
        if meta.get("format") == "evstore" and type(v) is int and v > FORMAT_VERSION:
            return v
    except (OSError, ValueError, AttributeError):
        pass
    return None


# --- plan data -------------------------------------------------------------------


class _Repair(LogPlanner, GapFiller, StreamRebuilder, Tidier):
    """One repair run: the state the passes share, and their order (``run``).

    The passes live in repair_plan.py, repair_fill.py, repair_streams.py and
    repair_tidy.py; this class holds what they have in common.
    """

    def __init__(self, directory: str, dry_run: bool, progress):
        directory = os.path.abspath(directory)
        self.dir = directory
        self.dry = dry_run
        self.progress = progress
        self.ldir = os.path.join(directory, L.LOG_DIR)
        self.sroot = os.path.join(directory, L.STREAMS_DIR)
        self.report = RepairReport(os.path.abspath(directory), dry_run)
        self.q = Quarantine(directory, dry_run)
        self.copies: dict[int, list[Copy]] = {}
        self.cut_ranges: list[tuple[int, int]] = []  # positions already in the events file
        # first position -> [(fd, path, offset, end, head)]: valid commit-log
        # frames that the walk met after it had passed their positions
        self.spare: dict[int, list] = {}
        #: the cuts (evstore/core/forgetting.py): what is below a floor is
        #: removed, and repair never brings it back
        self.cuts: dict = {}
        #: stream -> the last version compaction removed from its log
        self.bases: dict[str, int] = {}

    def act(self, action: str, message: str, path=None, **kw) -> None:
        self.report.actions.append(Action(action, message, L.rel(self.dir, path) if path else None,
                                          **kw))

    def run(self) -> RepairReport:
        before = verify(self.dir, settle=0.0, progress=self.progress)
        self.report.before = before
        if before.ok and not before.warnings:
            self.report.after = before
            return self.report
        self.boot, self.synced, self.state_msg = read_state(self.dir)
        self._forgetting()
        for sub in (self.ldir, self.sroot):
            if not os.path.isdir(sub):
                self.act("create", "directory was missing", sub)
                if not self.dry:
                    os.makedirs(sub, exist_ok=True)
        self.progress.begin("repair", total_bytes=_bytes_under(self.ldir))
        try:
            plan = self.plan_log()
        finally:
            self.progress.end()
        try:
            if not self.dry:
                self.apply_log(plan)
            else:
                self.q.events += plan.cut_events
                for s in plan.segs:
                    if s.untouched:
                        self._write_index(L.seg_path(self.ldir, s.first, L.LOG_IDX), s.entries,
                                          "position", s.first)
            self.fix_streams(plan)
            self.tidy(plan)
            if self.report.actions and not self.dry:
                self.mark_generation()
        finally:
            for fd in plan.fds.values():
                os.close(fd)
        self.report.removed_events = self.q.events
        if self.q.used:
            self.report.quarantine = self.q.dir
            if self.q.events:
                self.report.events_file = self.q.events_path
        self.q.close({k: v for k, v in self.report.to_dict().items() if k in ("actions", "lost")})
        if not self.dry:
            self.report.after = verify(self.dir, settle=0.0, progress=self.progress)
        return self.report

    def _forgetting(self) -> None:
        """The cuts, and where each cut stream's log starts (as verify
        reads them).  A damaged ``cuts.json`` stops repair: without it,
        repair cannot tell a removed event from a lost one, and would bring
        back what delete removed."""
        from ..backends.files.forget import load_cuts
        from ..errors import CorruptStore

        try:
            self.cuts = load_cuts(self.dir)
        except CorruptStore as e:
            raise CorruptStore(f"{str(e).split('; run', 1)[0]}: repair cannot tell removed "
                               "events from lost ones without it; restore it from a backup "
                               "(or remove it, which makes deleted events readable again), "
                               "then run 'evstore repair' again") from None
        for stream, cut in self.cuts.items():
            if cut.floor > 1:
                key = stream_key(stream)
                firsts = L.numbered(L.listdir(os.path.join(self.sroot, key[:2], key)),
                                    L.STREAM_SEG)
                start = min(firsts[0] if firsts else cut.floor, cut.floor)
                if start > 1:
                    self.bases[stream] = start - 1

    def _jump_ok(self, stream: str, fv: int, prev: int) -> bool:
        """A stream's versions may jump from ``prev`` to ``fv`` only at or
        below its floor (the versions between were removed)."""
        cut = self.cuts.get(stream)
        return fv > prev and cut is not None and fv <= cut.floor

    def _floor(self, stream: str) -> int:
        cut = self.cuts.get(stream)
        return cut.floor if cut is not None else 1

    def _write_atomic(self, path: str, data: bytes) -> None:
        """Every atomic file write of every pass goes through here (and so
        through this module's ``write_atomic``, which the interruption test
        replaces to crash at each change in turn)."""
        write_atomic(path, data)
