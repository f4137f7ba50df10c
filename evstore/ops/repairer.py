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

import bisect
import os
import zlib
from array import array
from dataclasses import dataclass, field

import msgpack

from ..disk.format import FORMAT_VERSION, LOG_MAGIC, STREAM_MAGIC, encode_frame
from ..disk.records import check_stream_id, format_timestamp, log_payload, stream_payload, us_to_datetime
from ..disk.recovery import current_boot_id, write_atomic
from ..disk.segment import fsync_dir, fsync_file
from ..disk.streamlog import stream_key
from . import layout as L
from .frames import batch_head, frame_at, log_segment_order, record_head, walk
from .progress import NO_PROGRESS
from .quarantine import Quarantine
from .report import Action, RepairReport
from .checks import (be_offsets, check_stream, marker_problem, read_state, read_stream_id,
                     store_directory)
from .verifier import verify

_crc32 = zlib.crc32


def repair(store, *, dry_run: bool = False, lock_timeout: float = 30.0,
           progress=None) -> RepairReport:
    """Repair ``store`` (an EventStore or a store directory) in place.

    Holds the writer lock throughout (StoreLocked after ``lock_timeout``).
    With ``dry_run`` nothing is written, and the report says what would be
    done.  Other handles on the store should be closed: repair may replace
    files they hold open.
    """
    from ..errors import CorruptStore
    from ..backends.files.locking import WriterLock

    directory = store_directory(store)
    newer = _newer_format(directory)
    if newer:
        raise CorruptStore(f"{directory}: the marker says format version {newer}; this evstore "
                           f"repairs version {FORMAT_VERSION} only (use a newer evstore)")
    lock = WriterLock(os.path.join(directory, L.LOCK_FILE), lock_timeout)
    try:
        with lock.hold(lock_timeout):
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

@dataclass
class Copy:
    """A stream-log record that may stand in for a lost commit-log event."""

    stream: str
    v: int
    p: int
    us: int
    path: str
    off: int


@dataclass
class OutSeg:
    """One commit-log segment as repair will leave it."""

    old: int | None  # the old segment it is made from (None: a new one)
    first: int = 0
    last: int = 0
    pieces: list = field(default_factory=list)  # ("copy", fd, start, end) | ("bytes", b)
    size: int = 0
    entries: array = field(default_factory=lambda: array("Q"))
    old_size: int = 0

    def add_copy(self, fd: int, start: int, end: int) -> int:
        off = self.size
        if self.pieces and self.pieces[-1][0] == "copy" and self.pieces[-1][1] == fd \
                and self.pieces[-1][3] == start:
            self.pieces[-1] = ("copy", fd, self.pieces[-1][2], end)
        else:
            self.pieces.append(("copy", fd, start, end))
        self.size += end - start
        return off

    def add_bytes(self, data: bytes) -> int:
        off = self.size
        self.pieces.append(("bytes", data))
        self.size += len(data)
        return off

    @property
    def untouched(self) -> bool:
        return (self.old == self.first and len(self.pieces) == 1 and self.pieces[0][0] == "copy"
                and self.pieces[0][2] == 0 and self.pieces[0][3] == self.old_size)


@dataclass
class LogPlan:
    segs: list = field(default_factory=list)
    removed: list = field(default_factory=list)  # (fd, path, start, end, reason)
    old_firsts: list = field(default_factory=list)
    head: int = 0
    versions: dict = field(default_factory=dict)
    digests: dict = field(default_factory=dict)
    cut: int | None = None
    lost: list = field(default_factory=list)  # (first, last) position ranges
    cut_frames: list = field(default_factory=list)  # (fd, off, end) valid frames after the cut
    cut_events: int = 0
    restored: int = 0
    extended: int = 0
    fds: dict = field(default_factory=dict)
    misnamed: dict = field(default_factory=dict)  # segment name -> the position it starts with


class _Repair:
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

    # -- A. the commit log ------------------------------------------------------------------
    def _segments(self, plan: LogPlan):
        """The segments in the order of the positions they hold (a stray copy
        under a wrong name after the real segment: see log_segment_order)."""
        firsts = L.numbered(L.listdir(self.ldir), L.LOG_SEG)
        plan.old_firsts = firsts
        for first, fp, misnamed in log_segment_order(self.ldir, firsts, L.LOG_SEG):
            if misnamed:
                plan.misnamed[first] = fp
            path = L.seg_path(self.ldir, first, L.LOG_SEG)
            fd = plan.fds.get(first)
            if fd is None:
                fd = plan.fds[first] = os.open(path, L.RDONLY)
            yield first, path, fd, os.fstat(fd).st_size

    def _frames(self, plan: LogPlan):
        """(first, path, fd, size, ok, off, end, head-or-reason, payload) for
        every item of every segment, plus (first, path, fd, size, None, ...)
        at the end of each segment."""
        for first, path, fd, size in self._segments(plan):
            self.progress.advance(nbytes=size // 2)  # each segment is walked twice
            for ok, off, end, x in walk(fd, LOG_MAGIC, size):
                if ok:
                    try:
                        head = batch_head(x)
                        if head[0] == "":  # a gap frame: positions compaction removed
                            if head[5] != len(x):
                                raise ValueError("a gap frame holds more than its head")
                            yield first, path, fd, size, True, off, end, head, x
                            continue
                        check_stream_id(head[0], new=False)
                        if head[1] < 1 or head[2] < 1:
                            raise ValueError("version or position below 1")
                        items = msgpack.unpackb(x, raw=False, strict_map_key=False)
                        if not isinstance(items, list) or len(items) != 4 + 4 * head[4]:
                            raise ValueError("wrong shape")
                    except Exception as e:  # noqa: BLE001 - undecodable means damaged
                        yield first, path, fd, size, False, off, end, f"undecodable frame ({e})", None
                        continue
                    yield first, path, fd, size, True, off, end, head, x
                else:
                    yield first, path, fd, size, False, off, end, x, None
            yield first, path, fd, size, None, size, size, None, None

    def plan_log(self) -> LogPlan:
        # A1: where are the gaps, and where does the log end?
        pre = LogPlan()
        wanted = []
        expected = 1
        ver: dict[str, int] = {}
        for _f, path, fd, _s, ok, off, end_, head, _x in self._frames(pre):
            if not ok:
                continue
            stream, fv, fp, _us, n, _hl = head
            if fp < expected:
                # a frame met after the walk passed its positions (a stray
                # copy, or a segment holding what a gap before it lacks):
                # kept in mind to fill such a gap (see fill)
                self.spare.setdefault(fp, []).append((fd, path, off, end_, head))
                continue
            if fp > expected:
                wanted.append((expected, fp - 1))
            if stream == "":
                expected = fp + n
                continue
            if fv != ver.get(stream, 0) + 1 and not self._jump_ok(stream, fv, ver.get(stream, 0)):
                wanted.append((fp, fp + n - 1))
            ver[stream] = fv + n - 1
            expected = fp + n
        end = expected - 1
        plan = LogPlan(fds=pre.fds)
        # A2: the stream logs' copies of events at those positions -- and past
        # the end, when something says batches there may have committed
        # (chained batches, sync-state and a whole but damaged last commit
        # frame are the proofs extend() takes, and verify reports each one)
        before = self.report.before
        past_end = self.synced > end or before is None or any(
            "past the commit log" in p.message or "not torn" in p.message
            for p in before.problems)
        if wanted or past_end:
            self.collect_copies(wanted, end if past_end else 1 << 62,
                                {stream_key(s): s for s in ver})
        # A3: the plan
        expected = 1
        ver = plan.versions
        seg = None
        for first, path, fd, size, ok, off, end_, head, x in self._frames(plan):
            if ok is None:  # end of a segment
                if seg is not None and seg.pieces:
                    plan.segs.append(seg)
                seg = None
                continue
            if seg is None:
                seg = OutSeg(first, old_size=size)
            if not ok:
                plan.removed.append((fd, path, off, end_, f"damaged ({head})"))
                continue
            stream, fv, fp, us, n, hl = head
            if plan.cut is not None:
                if fp + n <= expected:  # a repeat: already kept, or already taken out
                    plan.removed.append((fd, path, off, end_, f"repeats positions {fp}.."
                                         f"{fp + n - 1} already present"))
                    continue
                self._after_cut(plan, fd, path, off, end_, fp, n, expected)
                expected = max(expected, fp + n)
                continue
            if fp < expected:
                plan.removed.append((fd, path, off, end_,
                                     f"repeats positions {fp}..{fp + n - 1} already present"))
                continue
            if fp > expected:
                upto = self.fill(plan, seg, expected, fp - 1)
                if upto < fp - 1:
                    self.start_cut(plan, upto + 1, fp - 1)
                    self._after_cut(plan, fd, path, off, end_, fp, n, fp)
                    expected = fp + n
                    continue
                expected = fp
            if stream == "":  # a gap frame: kept as it is
                new_off = seg.add_copy(fd, off, end_)
                if seg.first == 0:
                    seg.first = fp
                seg.last = fp + n - 1
                seg.entries.extend([new_off] * n)
                expected = fp + n
                continue
            if fv != ver.get(stream, 0) + 1 and not self._jump_ok(stream, fv, ver.get(stream, 0)):
                # A valid frame that contradicts its stream's versions: trust
                # the copies of its positions instead, if they agree.
                plan.removed.append((fd, path, off, end_,
                                     f"stream {stream!r} version {fv} does not continue "
                                     f"version {ver.get(stream, 0)}"))
                upto = self.fill(plan, seg, fp, fp + n - 1)
                if upto < fp + n - 1:
                    self.start_cut(plan, upto + 1, fp + n - 1)
                    plan.cut_frames.append((fd, off, end_, fp, n))
                    plan.cut_events += n
                expected = fp + n
                continue
            new_off = seg.add_copy(fd, off, end_)
            if seg.first == 0:
                seg.first = fp
            seg.last = fp + n - 1
            self._accept(plan, seg, stream, fv, fp, us, n, x[hl:], new_off)
            expected = fp + n
        self.cut_ranges = [(fp, fp + n - 1) for _fd, _o, _e, fp, n in plan.cut_frames]
        if plan.cut is None:
            plan.head = expected - 1
            self.extend(plan)
        else:
            plan.head = plan.cut - 1
            for a, b in plan.lost:
                self.report.lost.append({
                    "positions": [a, b],
                    "message": (f"position {a} has no intact copy left (both its commit-log frame "
                                "and its stream record are damaged)" if a == b else
                                f"positions {a}..{b} have no intact copy left (both their "
                                "commit-log frames and their stream records are damaged)")})
        if self.synced > plan.head and plan.cut is None:
            a, b = plan.head + 1, self.synced
            self.report.lost.append({
                "positions": [a, b],
                "message": f"sync-state says positions up to {b} were committed, but no intact "
                           f"copy of positions {a}..{b} is left"})
        self._report_log(plan)
        return plan

    def _accept(self, plan, seg, stream, fv, fp, us, n, blobs, new_off) -> None:
        plan.versions[stream] = fv + n - 1
        dg = plan.digests.get(stream)
        if dg is None:
            dg = plan.digests[stream] = [0, 0, 0, 0]
        seg.entries.extend([new_off] * n)
        skip = min(max(self.bases.get(stream, 0) + 1 - fv, 0), n)
        if skip == n:
            return  # its log no longer holds these (removed by compaction)
        if skip:
            blobs = b"".join(_blobs_from(blobs, n)[skip:])
            fp, n = fp + skip, n - skip
        dg[0] += n
        dg[1] += n * fp + n * (n - 1) // 2
        dg[2] += n * us
        dg[3] = _crc32(blobs, dg[3])

    def _lost_in_gap(self, plan, a, b) -> None:
        """Record positions a..b (a gap after the cut) that have no copy."""
        p = a
        while p <= b:
            if self.copies.get(p):
                p += 1
                continue
            q = p
            while q + 1 <= b and not self.copies.get(q + 1):
                q += 1
            plan.lost.append((p, q))
            p = q + 1

    def start_cut(self, plan, cut: int, gap_end: int) -> None:
        plan.cut = cut
        self._lost_in_gap(plan, cut, gap_end)

    def _after_cut(self, plan, fd, path, off, end, fp, n, expected) -> None:
        """A valid frame after the cut: its events leave the store (kept)."""
        plan.cut_frames.append((fd, off, end, fp, n))
        plan.cut_events += n
        plan.removed.append((fd, path, off, end,
                             f"after position {plan.cut - 1}, where no intact copy is left"))
        self._lost_in_gap(plan, expected, fp - 1)

    def collect_copies(self, wanted, end: int, known: dict) -> None:
        """Index the stream records whose positions are in ``wanted`` or past ``end``."""
        wanted = sorted(wanted)
        starts = [a for a, _ in wanted]

        def want(p: int) -> bool:
            if p > end:
                return True
            i = bisect.bisect_right(starts, p) - 1
            return i >= 0 and wanted[i][0] <= p <= wanted[i][1]

        if not os.path.isdir(self.sroot):
            return
        for key, path in L.stream_dirs(self.sroot):
            if key is None:
                continue
            sid, _why = read_stream_id(path)
            stream = sid or known.get(key)
            if stream is None:
                continue
            for first in L.numbered(L.listdir(path), L.STREAM_SEG):
                spath = L.seg_path(path, first, L.STREAM_SEG)
                try:
                    fd = os.open(spath, L.RDONLY)
                except OSError:
                    continue
                try:
                    for ok, off, _end, x in walk(fd, STREAM_MAGIC, os.fstat(fd).st_size):
                        if not ok:
                            continue
                        try:
                            v, p, us, _hl = record_head(x)
                        except (ValueError, IndexError):
                            continue
                        if want(p):
                            self.copies.setdefault(p, []).append(Copy(stream, v, p, us, spath, off))
                finally:
                    os.close(fd)

    def _candidates(self, p: int, versions: dict) -> list[Copy]:
        out = {}
        for c in self.copies.get(p, ()):
            if c.v == versions.get(c.stream, 0) + 1:
                out.setdefault((c.stream, c.v, c.us), c)
        return list(out.values())

    def _run_from(self, c: Copy, limit: int) -> list[Copy]:
        run = [c]
        q = c.p + 1
        while q <= limit:
            nxt = {(d.stream, d.v, d.us): d for d in self.copies.get(q, ())
                   if d.stream == c.stream and d.v == run[-1].v + 1 and d.us == c.us}
            if len(nxt) != 1:
                break
            run.append(next(iter(nxt.values())))
            q += 1
        return run

    def _runs(self, a: int, b: int, versions: dict):
        """Batches of copies covering a..(at most) b, each starting where the
        previous ends; stops at a position without one unambiguous copy."""
        tv = dict(versions)
        runs = []
        p = a
        while p <= b:
            cands = self._candidates(p, tv)
            if len(cands) > 1:  # prefer the one another batch continues
                cands = [c for c in cands if self._candidates_after(self._run_from(c, b), tv)]
            if len(cands) != 1:
                break
            run = self._run_from(cands[0], b)
            runs.append(run)
            tv[run[0].stream] = run[-1].v
            p = run[-1].p + 1
        return runs, p

    def _candidates_after(self, run, versions) -> bool:
        tv = dict(versions)
        tv[run[0].stream] = run[-1].v
        return bool(self._candidates(run[-1].p + 1, tv))

    def fill(self, plan: LogPlan, seg: OutSeg, a: int, b: int) -> int:
        """Restore positions a..b; returns the last position restored.

        The first choice is a valid commit-log frame for the position found
        elsewhere in the log (a copy of a segment, under whatever name: its
        bytes are what the writer made, and it continues its stream); then
        runs of stream-log copies.  A frame found for a later position also
        proves where the run of copies before it ends."""
        p = a
        while p <= b:
            fr = self._spare_at(p, b, plan.versions)
            if fr is not None:
                self._restore_frame(plan, seg, fr)
                p = fr[4][2] + fr[4][4]
                continue
            stop = min((q for q in self.spare if p < q <= b), default=b + 1) - 1
            runs, q = self._runs(p, stop, plan.versions)
            if q <= stop and runs:
                runs.pop()  # its end is not proven: the lost event may belong to it
            for run in runs:
                self._restore(plan, seg, run, "restored from stream-log copies")
            if runs:
                p = runs[-1][-1].p + 1
            if p <= stop:
                break
        return p - 1

    def _spare_at(self, p: int, b: int, versions: dict):
        for fr in self.spare.get(p, ()):
            stream, fv, fp, _us, n, _hl = fr[4]
            if fv == versions.get(stream, 0) + 1 and fp + n - 1 <= b:
                return fr
        return None

    def _restore_frame(self, plan: LogPlan, seg: OutSeg, fr) -> None:
        fd, path, off, end, head = fr
        stream, fv, fp, us, n, hl = head
        payload = frame_at(fd, LOG_MAGIC, off, os.fstat(fd).st_size)
        new_off = seg.add_copy(fd, off, end)
        if seg.first == 0:
            seg.first = fp
        seg.last = fp + n - 1
        self._accept(plan, seg, stream, fv, fp, us, n, payload[hl:], new_off)
        plan.restored += n
        self.act("restore", f"restored from the copy of its frame at {L.rel(self.dir, path)}@{off}",
                 None, stream=stream, positions=(fp, fp + n - 1), versions=(fv, fv + n - 1))

    def extend(self, plan: LogPlan) -> None:
        """Restore batches past the log's end that are proven committed."""
        if not self.copies:
            return
        runs, _p = self._runs(plan.head + 1, 1 << 62, plan.versions)
        if runs and self.synced != runs[-1][-1].p and not self._damaged_frame_of(plan, runs[-1]):
            # the last batch: committed only if sync-state says exactly so,
            # or its own commit frame is there, whole but damaged
            runs.pop()
        if not runs:
            return
        seg = plan.segs[-1] if plan.segs else None
        if seg is None:
            seg = OutSeg(None)
            plan.segs.append(seg)
        for run in runs:
            self._restore(plan, seg, run, "restored past the commit log's end from stream-log "
                          "copies (proven committed)")
            plan.extended += len(run)
        plan.head = runs[-1][-1].p

    def _encode_run(self, run: list[Copy]) -> tuple[bytes, list]:
        """The commit frame a batch's stream-log copies say it had (byte for
        byte: the same fields, packed the same way), and the events' bytes."""
        blobs = []
        for c in run:
            fd = os.open(c.path, L.RDONLY)
            try:
                payload = frame_at(fd, STREAM_MAGIC, c.off, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            v, p, us, hl = record_head(payload)
            blobs.append(payload[hl:])
        c0 = run[0]
        return encode_frame(LOG_MAGIC, log_payload(c0.stream, c0.v, c0.p, c0.us, blobs)), blobs

    def _damaged_frame_of(self, plan: LogPlan, run: list[Copy]) -> bool:
        """Is the damaged end of the commit log this batch's commit frame,
        whole but for a few bytes?  A frame is written whole only by a commit
        (a writer that dies leaves it short), so the batch was committed and
        may have been acknowledged: restore it rather than remove it."""
        damaged = [r for r in plan.removed if r[4].startswith("damaged")]
        if not damaged:
            return False
        fd, path, off, end, _ = damaged[-1]
        if end != os.fstat(fd).st_size:
            return False  # not the end of its segment
        frame, _ = self._encode_run(run)
        if len(frame) != end - off:
            return False
        got = os.pread(fd, end - off, off)
        differ = sum(1 for a, b in zip(got, frame) if a != b)
        return 0 < differ <= min(512, len(frame) // 4)

    def _restore(self, plan: LogPlan, seg: OutSeg, run: list[Copy], why: str) -> None:
        frame, blobs = self._encode_run(run)
        c0 = run[0]
        new_off = seg.add_bytes(frame)
        if seg.first == 0:
            seg.first = c0.p
        seg.last = run[-1].p
        self._accept(plan, seg, c0.stream, c0.v, c0.p, c0.us, len(run), b"".join(blobs), new_off)
        plan.restored += len(run)
        self.act("restore", why, None, stream=c0.stream, positions=(c0.p, run[-1].p),
                 versions=(c0.v, run[-1].v))

    def _report_log(self, plan: LogPlan) -> None:
        kept = {s.old for s in plan.segs}
        for first, fp in sorted(plan.misnamed.items()):
            self.act("stray", f"segment named for position {first} starts with position {fp}: "
                     + ("a misnamed segment; its frames are kept under the right name"
                        if first in kept else "a stray copy (duplicated or misnamed segment) of "
                        "positions that other segments hold; it is removed"),
                     L.seg_path(self.ldir, first, L.LOG_SEG))
        for fd, path, start, end, reason in _merge(plan.removed):
            self.act("remove", f"{end - start} bytes: {reason}", path, offset=start,
                     bytes=end - start)
        if plan.cut is not None:
            self.act("cut", f"the commit log now ends at position {plan.cut - 1}; "
                     f"{plan.cut_events} intact events after it are taken out (kept in the "
                     "quarantine's removed-events.ndjson)", None, positions=(plan.cut, plan.cut))
        new_names = {s.first for s in plan.segs}
        for s in plan.segs:
            if not s.untouched:
                what = "rewrite" if s.old == s.first else "write"
                self.act(what, f"commit-log segment with positions {s.first}..{s.last}",
                         L.seg_path(self.ldir, s.first, L.LOG_SEG))
        for first in plan.old_firsts:
            if first not in new_names:
                self.act("delete", "misnamed commit-log segment, its frames now under the right "
                         "name" if first in plan.misnamed and first in kept else
                         "commit-log segment with nothing to keep",
                         L.seg_path(self.ldir, first, L.LOG_SEG))

    def apply_log(self, plan: LogPlan) -> None:
        q = self.q
        for fd, path, start, end, reason in _merge(plan.removed):
            q.keep_range(fd, path, start, end, reason)
        for fd, off, end, _fp, _n in plan.cut_frames:
            payload = frame_at(fd, LOG_MAGIC, off, os.fstat(fd).st_size)
            for line in _batch_lines(payload):
                q.event(line)
        q.flush()
        new_names = set()
        for s in plan.segs:
            new_names.add(s.first)
            path = L.seg_path(self.ldir, s.first, L.LOG_SEG)
            if not s.untouched:
                tmp = os.path.join(self.ldir, f".tmp-repair-{s.first:016d}{L.LOG_SEG}")
                with open(tmp, "wb") as out:
                    for piece in s.pieces:
                        if piece[0] == "bytes":
                            out.write(piece[1])
                        else:
                            _copy(piece[1], piece[2], piece[3], out)
                    out.flush()
                    fsync_file(out.fileno())
                os.replace(tmp, path)
            self._write_index(L.seg_path(self.ldir, s.first, L.LOG_IDX), s.entries,
                              "position", s.first, quiet=not s.untouched)
        for first in plan.old_firsts:
            if first not in new_names:
                for suffix in (L.LOG_SEG, L.LOG_IDX):
                    try:
                        os.unlink(L.seg_path(self.ldir, first, suffix))
                    except FileNotFoundError:
                        pass
        fsync_dir(self.ldir)

    def _write_index(self, path: str, entries: array, label: str, first: int,
                     quiet: bool = False) -> bool:
        want = be_offsets(entries)
        try:
            with open(path, "rb", opener=L.opener) as f:
                if f.read() == want:
                    return False
        except FileNotFoundError:
            pass
        if not self.dry:
            write_atomic(path, want)
        if not quiet:
            self.act("reindex", f"index rebuilt from the data ({len(entries)} entries)", path)
        return True

    # -- B. stream logs ---------------------------------------------------------------------
    def fix_streams(self, plan: LogPlan) -> None:
        known = {stream_key(s): s for s in plan.versions}
        digests = {s: tuple(d) for s, d in plan.digests.items()}
        todo = []
        seen = set()
        for key, path in L.stream_dirs(self.sroot) if os.path.isdir(self.sroot) else ():
            if key is None:
                continue
            r = check_stream(self.dir, key, path, plan.head, known, digests, bases=self.bases)
            seen.add(key)
            stream = r.stream
            if stream is not None and plan.versions.get(stream) \
                    and plan.versions[stream] < self._floor(stream):
                self.drop_removed_stream_dir(path, stream)
                continue
            if stream is None or not plan.versions.get(stream):
                self.drop_stream_dir(path, stream, r)
                continue
            if r.rebuild or r.mismatch or r.beyond:
                todo.append((stream, path, r))
                continue
            for first in r.bad_index:
                self.reindex_stream_segment(path, first)
            if r.id_bad:
                self.write_id(path, stream)
        for stream in plan.versions:
            key = stream_key(stream)
            if plan.versions[stream] < self._floor(stream):
                continue  # every event of it was removed: no log to rebuild
            if key not in seen:
                todo.append((stream, os.path.join(self.sroot, key[:2], key), None))
        if not todo:
            return
        if self.dry:
            for stream, path, r in todo:
                why = "missing" if r is None else ("uncommitted records after its end"
                                                   if not (r.rebuild or r.mismatch) else
                                                   "records differ from the commit log")
                self.act("rebuild", f"stream log rebuilt from the commit log ({why})", path,
                         stream=stream, versions=(1, plan.versions[stream]))
            return
        refs = self.truth_refs({s for s, _p, _r in todo})
        self.progress.begin("rebuild streams", total_events=sum(plan.versions[s] for s, _p, _r in todo))
        try:
            for stream, path, r in todo:
                self.rebuild_stream(stream, path, r, refs.get(stream, []), plan.versions[stream])
                self.progress.advance(events=plan.versions[stream])
        finally:
            self.progress.end()

    def _first_version(self, refs) -> int:
        """The first version the commit log holds of a stream (its frames'
        ``refs``), 1 when it holds none."""
        for path, off in refs[:1]:
            fd = os.open(path, L.RDONLY)
            try:
                return batch_head(frame_at(fd, LOG_MAGIC, off, os.fstat(fd).st_size))[1]
            finally:
                os.close(fd)
        return 1

    def truth_refs(self, streams: set) -> dict:
        """(segment path, offset) of each commit-log frame of ``streams``."""
        refs: dict[str, list] = {}
        for first in L.numbered(L.listdir(self.ldir), L.LOG_SEG):
            path = L.seg_path(self.ldir, first, L.LOG_SEG)
            fd = os.open(path, L.RDONLY)
            try:
                for ok, off, _end, x in walk(fd, LOG_MAGIC, os.fstat(fd).st_size):
                    if ok:
                        stream = batch_head(x)[0]
                        if stream in streams:
                            refs.setdefault(stream, []).append((path, off))
            finally:
                os.close(fd)
        return refs

    def _truth_records(self, refs):
        """Yield (version, position, us, frame bytes) of a stream's records,
        made from its commit-log frames."""
        from .checks import split_blobs

        for path, off in refs:
            fd = os.open(path, L.RDONLY)
            try:
                payload = frame_at(fd, LOG_MAGIC, off, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            stream, fv, fp, us, n, hl = batch_head(payload)
            for i, blob in enumerate(split_blobs(payload, hl, n)):
                yield fv + i, fp + i, us, encode_frame(STREAM_MAGIC,
                                                      stream_payload(fv + i, fp + i, us, blob))

    def rebuild_stream(self, stream: str, path: str, r, refs, version: int) -> None:
        if not os.path.isdir(path):
            # like the core: the directory appears with its id already inside
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".tmp-{os.path.basename(path)}-repair-{os.getpid()}")
            os.makedirs(tmp, exist_ok=True)
            write_atomic(os.path.join(tmp, L.ID_FILE), stream.encode("utf-8"))
            os.rename(tmp, path)
            fsync_dir(parent)
            self.act("create", "stream directory was missing; rebuilt from the commit log",
                     path, stream=stream, versions=(1, version))
        elif r is None or r.id_bad:
            self.write_id(path, stream)
        olds = L.numbered(L.listdir(path), L.STREAM_SEG)
        # never below the floor: removed events are not brought back
        start = max(self._floor(stream), self._first_version(refs))
        # segments starting below it hold removed events (the versions from
        # start on are rewritten from the commit log): deleted, not quarantined
        gone = [f for f in olds if f < start]
        for f in gone:
            for suffix in (L.STREAM_SEG, L.STREAM_IDX):
                try:
                    os.unlink(L.seg_path(path, f, suffix))
                except FileNotFoundError:
                    pass
            self.act("delete", "stream segment holding only removed events",
                     L.seg_path(path, f, L.STREAM_SEG), stream=stream)
        olds = [f for f in olds if f not in gone]
        bounds = sorted({start} | {f for f in olds if start <= f <= version
                                   and _starts_at(path, f)})
        truth = (r for r in self._truth_records(refs) if r[0] >= start)
        pending: dict = {}  # version -> [(id, line)] of removed intact records
        kept_total = 0
        for i, lo in enumerate(bounds):
            hi = bounds[i + 1] - 1 if i + 1 < len(bounds) else version
            frames = []
            for _ in range(hi - lo + 1):
                rec = next(truth, None)
                if rec is None:
                    raise RuntimeError(f"stream {stream!r}: the commit log holds fewer events "
                                       f"than its version {version}")
                frames.append(rec)
            kept_total += self._rewrite_stream_segment(stream, path, lo, hi, frames, pending)
        for f in olds:
            if f not in bounds:
                spath = L.seg_path(path, f, L.STREAM_SEG)
                self._drop_stream_records(stream, spath, None, pending,
                                          "segment past the stream's committed end"
                                          if f > version else "a duplicated or misnamed segment")
                for suffix in (L.STREAM_SEG, L.STREAM_IDX):
                    try:
                        os.unlink(L.seg_path(path, f, suffix))
                    except FileNotFoundError:
                        pass
                self.act("delete", "stream segment with nothing committed to keep", spath,
                         stream=stream)
        fsync_dir(path)
        self._settle_removed(refs, pending)

    def _rewrite_stream_segment(self, stream, path, lo, hi, frames, pending) -> int:
        spath = L.seg_path(path, lo, L.STREAM_SEG)
        data = b"".join(f[3] for f in frames)
        entries = array("Q")
        off = 0
        for f in frames:
            entries.append(off)
            off += len(f[3])
        try:
            with open(spath, "rb", opener=L.opener) as fh:
                same = fh.read() == data
        except FileNotFoundError:
            same = False
        if not same:
            by_version = {f[0]: f[3] for f in frames}
            if os.path.exists(spath):
                self._drop_stream_records(stream, spath, by_version, pending,
                                          "not the commit log's record for its version")
            write_atomic(spath, data)
            self.act("rewrite", "stream segment rebuilt from the commit log", spath,
                     stream=stream, versions=(lo, hi))
        self._write_index(L.seg_path(path, lo, L.STREAM_IDX), entries, "version", lo,
                          quiet=not same)
        return len(frames)

    def _drop_stream_records(self, stream, spath, by_version, pending, reason) -> None:
        """Quarantine the bytes of ``spath`` that the rebuilt segment does not
        hold, and the intact events among them that the store loses.  With
        ``pending`` (a dict), intact records wait there until the whole
        stream is rebuilt: only those the store no longer holds are kept as
        removed events."""
        fd = os.open(spath, L.RDONLY)
        try:
            size = os.fstat(fd).st_size
            removed = []
            for ok, off, end, x in walk(fd, STREAM_MAGIC, size):
                if not ok:
                    removed.append((fd, spath, off, end, f"damaged ({x})"))
                    continue
                try:
                    v, p, us, hl = record_head(x)
                except (ValueError, IndexError):
                    removed.append((fd, spath, off, end, "unreadable record"))
                    continue
                if by_version is not None and by_version.get(v) == os.pread(fd, end - off, off):
                    continue
                removed.append((fd, spath, off, end, reason))
                self._removed_event(stream, bytes(x), v, p, pending)
            for item in _merge(removed):
                self.q.keep_range(*item)
                self.act("remove", f"{item[3] - item[2]} bytes: {item[4]}", spath, offset=item[2],
                         bytes=item[3] - item[2], stream=stream)
        finally:
            os.close(fd)
        self.q.flush()

    def _removed_event(self, stream, payload: bytes, v, p, pending) -> None:
        """An intact record leaves the store: keep it as a recorded event,
        unless it is already in the events file or (decided later, by
        :meth:`_settle_removed`) the store still holds the same event."""
        if any(a <= p <= b for a, b in self.cut_ranges):
            return  # already in the events file, from its commit-log frame
        try:
            rec = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - a record that passed its CRC but does not decode
            return
        line = _line(stream, *rec)
        if pending is None:
            self.q.event(line)
        else:
            pending.setdefault(v, []).append((rec[3], line))

    def _settle_removed(self, refs, pending) -> None:
        if not pending:
            return
        for v, _p, _us, frame in self._truth_records(refs):
            if v in pending:
                eid = msgpack.unpackb(frame[12:-4], raw=False, strict_map_key=False)[3]
                pending[v] = [x for x in pending[v] if x[0] != eid]
        for v in sorted(pending):
            for _id, line in pending[v]:
                self.q.event(line)
        self.q.flush()

    def drop_removed_stream_dir(self, path: str, stream: str) -> None:
        """The log of a stream whose every event is removed (what an
        interrupted compaction leaves): deleted, not quarantined."""
        self.act("delete", "stream directory whose every event is removed", path, stream=stream)
        if self.dry:
            return
        for name in L.listdir(path):
            p = os.path.join(path, name)
            if name == L.ID_FILE or name.endswith((L.STREAM_SEG, L.STREAM_IDX)):
                os.unlink(p)
        try:
            os.rmdir(path)
        except OSError:
            pass
        fsync_dir(os.path.dirname(path))

    def drop_stream_dir(self, path: str, stream, r) -> None:
        """A stream directory with nothing committed: its records never
        committed (or belong to a stream nobody can name)."""
        if self.dry:
            n = sum(1 for b in r.beyond if b[0] is not None)
            self.q.events += n
            self.act("delete", f"stream directory with no committed event ({n} records moved "
                     "to quarantine)", path, stream=stream)
            return
        for f in L.numbered(L.listdir(path), L.STREAM_SEG):
            spath = L.seg_path(path, f, L.STREAM_SEG)
            self._drop_stream_records(stream or f"<unknown stream, key {os.path.basename(path)}>",
                                      spath, None, None, "no committed event in this stream")
        for name in L.listdir(path):
            p = os.path.join(path, name)
            if name == L.ID_FILE or name.endswith((L.STREAM_SEG, L.STREAM_IDX)):
                os.unlink(p)
            elif os.path.isfile(p):
                self.q.move_in(p)
        try:
            os.rmdir(path)
        except OSError:
            pass
        fsync_dir(os.path.dirname(path))
        self.act("delete", "stream directory with no committed event", path, stream=stream)

    def reindex_stream_segment(self, path: str, first: int) -> None:
        spath = L.seg_path(path, first, L.STREAM_SEG)
        entries = array("Q")
        v = first
        fd = os.open(spath, L.RDONLY)
        try:
            for ok, off, _end, x in walk(fd, STREAM_MAGIC, os.fstat(fd).st_size):
                if not ok:
                    break
                if record_head(x)[0] != v:
                    break
                entries.append(off)
                v += 1
        finally:
            os.close(fd)
        self._write_index(L.seg_path(path, first, L.STREAM_IDX), entries, "version", first)

    def write_id(self, path: str, stream: str) -> None:
        ipath = os.path.join(path, L.ID_FILE)
        if not self.dry:
            try:
                with open(ipath, "rb", opener=L.opener) as f:
                    old = f.read()
                if old != stream.encode("utf-8"):
                    self.q.keep(ipath, 0, old, "wrong stream id")
            except FileNotFoundError:
                pass
            write_atomic(ipath, stream.encode("utf-8"))
        self.act("rewrite", "stream id file rewritten from the commit log", ipath, stream=stream)

    # -- C. the rest --------------------------------------------------------------------------
    def tidy(self, plan: LogPlan) -> None:
        if os.path.isdir(os.path.join(self.dir, L.SNAPSHOTS_DIR)):
            try:
                from .checks import snapshot_findings

                found = list(snapshot_findings(self.dir, plan.versions))
            except ImportError:  # no snapshot module: nothing reads them either
                found = []
            for path, why, stream, _version in found:
                # a snapshot is a cache: recomputed from the events when wanted
                self.q.move_in(path)
                self.act("move", f"{why}; moved to quarantine (snapshots are caches: "
                         "'evstore snapshot' makes a new one)", path, stream=stream)
        self.tidy_checkpoints(plan)
        self.tidy_settings()
        for path in list(L.temp_leftovers(self.dir)):
            self.q.move_in(path)
            self.act("move", "temp file left by an interrupted write, moved to quarantine",
                     path)
        names = L.listdir(self.ldir)
        segs = set(L.numbered(names, L.LOG_SEG))
        for first in L.numbered(names, L.LOG_IDX):
            if first not in segs:
                p = L.seg_path(self.ldir, first, L.LOG_IDX)
                if not self.dry:
                    os.unlink(p)
                self.act("delete", "index without its segment", p)
        marker = os.path.join(self.dir, L.MARKER)
        if marker_problem(self.dir):
            if not self.dry:
                if os.path.exists(marker):
                    with open(marker, "rb", opener=L.opener) as f:
                        self.q.keep(marker, 0, f.read(), "damaged store marker")
                import json

                write_atomic(marker, json.dumps({"format": "evstore", "format_version":
                                                 FORMAT_VERSION}, indent=1).encode() + b"\n")
            self.act("rewrite", "store marker rewritten", marker)
        flag = os.path.join(self.dir, L.FSYNC_FAILED)
        failed = os.path.exists(flag)
        if failed or self.state_msg:
            if not self.dry:
                self.sync_everything()
                from ..disk.recovery import save_state

                save_state(self.dir, current_boot_id(), plan.head)
            self.act("sync", "every segment and directory fsynced; sync-state set to position "
                     f"{plan.head}", os.path.join(self.dir, L.STATE_FILE))
        elif self.synced > plan.head:
            if not self.dry:
                from ..disk.recovery import save_state

                save_state(self.dir, self.boot, plan.head)
            self.act("rewrite", f"sync-state lowered to the commit log's end ({plan.head})",
                     os.path.join(self.dir, L.STATE_FILE))
        if failed:
            if not self.dry:
                os.unlink(flag)
                fsync_dir(self.dir)
            self.act("delete", "fsync-failed flag cleared: the store is synced again", flag)

    def tidy_checkpoints(self, plan: LogPlan) -> None:
        """A checkpoint file its module calls damaged cannot be read by its
        consumer: it moves to quarantine, and that consumer starts again
        from the beginning (delivery is at least once, so it sees events
        twice, never misses one).  Checkpoints past the head stay: their
        consumers resume at the head."""
        if not os.path.isdir(os.path.join(self.dir, L.CHECKPOINTS_DIR)):
            return
        try:
            from ..backends.files.checkpoints import verify_files
        except ImportError:
            return
        for item in list(verify_files(self.dir, dict(plan.versions), plan.head)):
            if item.get("severity", "error") != "error" or not item.get("file"):
                continue
            path = os.path.join(self.dir, item["file"])
            if os.path.exists(path):
                self.q.move_in(path)
                self.act("move", f"{item.get('message', 'damaged checkpoint')}; moved to "
                         "quarantine: its consumer starts again from the first event", path)

    def tidy_settings(self) -> None:
        """Damaged settings cannot be trusted (a changed snapshot_every or
        reducer): the file moves to quarantine and the defaults apply until
        ``evstore config`` sets them again."""
        from ..backends.files.settings import verify_file

        for item in list(verify_file(self.dir)):
            if item.get("severity") != "error":
                continue
            path = os.path.join(self.dir, item["file"])
            if os.path.lexists(path):
                self.q.move_in(path)
                self.act("move", f"{item['message']}; moved to quarantine: the defaults apply "
                         "until 'evstore config' sets them again", path)

    def mark_generation(self) -> None:
        """Replace the marker with an identical file: its new inode tells
        open EventStore handles that files changed under them (the core can
        compare ``os.stat(marker)`` to what it saw when it opened; see
        docs/OPERATIONS.md, "Other handles")."""
        import json

        marker = os.path.join(self.dir, L.MARKER)
        if marker_problem(self.dir) is None:
            with open(marker, "rb", opener=L.opener) as f:
                data = f.read()
        else:
            data = json.dumps({"format": "evstore", "format_version": FORMAT_VERSION},
                              indent=1).encode() + b"\n"
        write_atomic(marker, data)

    def sync_everything(self) -> None:
        for root, dirs, files in os.walk(self.dir):
            rel = L.rel(self.dir, root).split(os.sep)[0]
            if rel == L.QUARANTINE:
                dirs[:] = []
                continue
            for name in files:
                if name.endswith((L.LOG_SEG, L.STREAM_SEG)) or name in (L.ID_FILE, L.MARKER):
                    fd = os.open(os.path.join(root, name), L.RDONLY)
                    try:
                        fsync_file(fd)
                    finally:
                        os.close(fd)
            fsync_dir(root)


def _bytes_under(path: str) -> int:
    return sum(L.file_size(os.path.join(path, f)) for f in L.listdir(path))


def _merge(removed):
    """Merge adjacent removed ranges of the same file."""
    out = []
    for fd, path, start, end, reason in sorted(removed, key=lambda r: (r[1], r[2])):
        if out and out[-1][1] == path and out[-1][3] >= start:
            o = out[-1]
            out[-1] = (o[0], path, o[2], max(o[3], end), _join_reasons(o[4], reason))
        else:
            out.append((fd, path, start, end, reason))
    return out


def _join_reasons(a: str, b: str) -> str:
    import re

    if a == b or b in a:
        return a
    m1 = re.search(r"(?:\A|; )repeats positions (\d+)\.\.\d+ already present\Z", a)
    m2 = re.match(r"repeats positions \d+\.\.(\d+) already present\Z", b)
    if m1 and m2:
        return (a[:m1.start()] + ("; " if m1.start() else "")
                + f"repeats positions {m1.group(1)}..{m2.group(1)} already present")
    return f"{a}; {b}"


def _blobs_from(blobs, n: int) -> list[bytes]:
    """The ``n`` events' packed fields in a batch's payload tail."""
    from .checks import split_blobs
    return split_blobs(blobs, 0, n)


def _starts_at(path: str, first: int) -> bool:
    """Whether stream segment ``first`` begins with a valid record of that version."""
    spath = L.seg_path(path, first, L.STREAM_SEG)
    try:
        fd = os.open(spath, L.RDONLY)
    except OSError:
        return False
    try:
        payload = frame_at(fd, STREAM_MAGIC, 0, os.fstat(fd).st_size)
        return payload is not None and record_head(payload)[0] == first
    except (ValueError, IndexError):
        return False
    finally:
        os.close(fd)


def _copy(fd: int, start: int, end: int, out) -> None:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(end - pos, 8 << 20), pos)
        if not chunk:
            raise OSError(f"short read at {pos}")
        out.write(chunk)
        pos += len(chunk)


def _line(stream, v, p, us, eid, etype, data, metadata) -> str:
    from ..features.jsonio import dumps

    return dumps({"stream": stream, "version": v, "position": p, "id": eid, "type": etype,
                  "data": data, "metadata": metadata,
                  "recorded_at": format_timestamp(us_to_datetime(us))})


def _batch_lines(payload):
    items = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    stream, fv, fp, us = items[:4]
    f = items[4:]
    for i in range(len(f) // 4):
        yield _line(stream, fv + i, fp + i, us, *f[4 * i:4 * i + 4])
