"""Repair, pass A (planning): walk the commit log and decide, frame by frame,
what the repaired log keeps.

Segments are walked in the order of the positions they hold; each valid frame
that continues the positions and its stream's versions is kept, and a gap is
handed to the fill pass (repair_fill.py).  Nothing is written here: the
result is a ``LogPlan`` that ``apply_log`` carries out.
"""
from __future__ import annotations

import zlib
import os


from ..disk.format import LOG_MAGIC
from ..disk.streamdir import stream_key
from ..model import check_stream_id, unpack
from . import layout as L
from ..disk.frames import walk
from ..disk.heads import batch_head
from .frames import log_segment_order
_crc32 = zlib.crc32
from .repair_common import OutSeg, LogPlan, _blobs_from


class LogPlanner:
    """The planning half of pass A; mixed into ``repairer._Repair``."""

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
                        items = unpack(x)
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
        """The plan for the commit log: which frames are kept, which
        positions are filled from stream-log copies, where the log is cut
        when neither copy of a position is intact, and what is lost."""
        # A1: where are the gaps, and where does the log end?
        pre = LogPlan()
        wanted, end, ver = self._find_wanted(pre)
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
        expected = self._plan_frames(plan)
        self.cut_ranges = [(fp, fp + n - 1) for _fd, _o, _e, fp, n in plan.cut_frames]
        self._plan_end(plan, expected)
        self._report_log(plan)
        return plan

    def _find_wanted(self, pre: LogPlan):
        """A first walk: ``(wanted, end, versions)``, the position ranges
        whose commit-log frames are missing, damaged or contradict their
        stream's versions, where the sound log ends, and the streams seen.
        Frames met after the walk passed their positions are kept in
        ``self.spare`` (a stray copy may fill a gap before it)."""
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
        return wanted, expected - 1, ver

    def _plan_frames(self, plan: LogPlan) -> int:
        """The second walk, building the new segments frame by frame
        (:meth:`_plan_frame`); damaged frames are removed.  Returns the
        position after the last one planned."""
        expected = 1
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
            expected = self._plan_frame(plan, seg, fd, path, off, end_, head, x, expected)
        return expected

    def _plan_frame(self, plan, seg, fd, path, off, end_, head, x, expected: int) -> int:
        """One sound frame: past a cut it only moves aside; a repeat is
        removed; a gap before it is filled from copies (or starts the cut);
        a gap frame is kept as it is; a batch that contradicts its stream's
        versions gives way to its copies; any other batch is kept.  Returns
        the next expected position."""
        stream, fv, fp, us, n, hl = head
        if plan.cut is not None:
            if fp + n <= expected:  # a repeat: already kept, or already taken out
                plan.removed.append((fd, path, off, end_, f"repeats positions {fp}.."
                                     f"{fp + n - 1} already present"))
                return expected
            self._after_cut(plan, fd, path, off, end_, fp, n, expected)
            return max(expected, fp + n)
        if fp < expected:
            plan.removed.append((fd, path, off, end_,
                                 f"repeats positions {fp}..{fp + n - 1} already present"))
            return expected
        if fp > expected:
            upto = self.fill(plan, seg, expected, fp - 1)
            if upto < fp - 1:
                self.start_cut(plan, upto + 1, fp - 1)
                self._after_cut(plan, fd, path, off, end_, fp, n, fp)
                return fp + n
        if stream == "":  # a gap frame: kept as it is
            new_off = _keep(seg, fd, off, end_, fp, n)
            seg.entries.extend([new_off] * n)
            return fp + n
        if fv != plan.versions.get(stream, 0) + 1 and not self._jump_ok(
                stream, fv, plan.versions.get(stream, 0)):
            # A valid frame that contradicts its stream's versions: trust
            # the copies of its positions instead, if they agree.
            plan.removed.append((fd, path, off, end_,
                                 f"stream {stream!r} version {fv} does not continue "
                                 f"version {plan.versions.get(stream, 0)}"))
            upto = self.fill(plan, seg, fp, fp + n - 1)
            if upto < fp + n - 1:
                self.start_cut(plan, upto + 1, fp + n - 1)
                plan.cut_frames.append((fd, off, end_, fp, n))
                plan.cut_events += n
            return fp + n
        new_off = _keep(seg, fd, off, end_, fp, n)
        self._accept(plan, seg, stream, fv, fp, us, n, x[hl:], new_off)
        return fp + n

    def _plan_end(self, plan: LogPlan, expected: int) -> None:
        """Where the new log ends: after the last planned position (then
        extended by committed batches only the stream logs still hold), or
        before the cut, with the positions lost for lack of any intact copy;
        positions sync-state says were committed and that are gone are lost
        too."""
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


def _keep(seg: OutSeg, fd: int, off: int, end: int, fp: int, n: int) -> int:
    """Copy a frame as it is into the new segment, which then holds its
    positions; returns the frame's offset there."""
    new_off = seg.add_copy(fd, off, end)
    if seg.first == 0:
        seg.first = fp
    seg.last = fp + n - 1
    return new_off
