"""Repair, pass A (filling and writing): refill the commit log's gaps from
stray frames and stream-log copies, extend it with proven-committed batches,
and write the planned log.

A run of copies is restored as a batch only when its end is proven, so a
batch is never restored in part; see repairer.py's docstring for the rules.
"""
from __future__ import annotations

import bisect
import os
from array import array

from ..disk.format import LOG_MAGIC, STREAM_MAGIC, encode_frame
from ..disk.records import log_payload
from ..disk.segment import fsync_dir, fsync_file
from . import layout as L
from ..disk.streamwalk import SOUND, stream_records
from ..disk.frames import frame_at
from ..disk.heads import record_head
from .checks import be_offsets, read_stream_id
from .repair_common import Copy, OutSeg, LogPlan, _merge, _copy, _batch_lines


class GapFiller:
    """The filling and writing half of pass A; mixed into ``repairer._Repair``."""

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
                    opening = L.opened(spath)
                except OSError:
                    continue
                with opening as fd:
                    for label, off, _end, what, _x in stream_records(fd):
                        if label != SOUND:
                            continue
                        v, p, us, _hl = what
                        if want(p):
                            self.copies.setdefault(p, []).append(Copy(stream, v, p, us, spath, off))

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
            with L.opened(c.path) as fd:
                payload = frame_at(fd, STREAM_MAGIC, c.off, os.fstat(fd).st_size)
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
            self._write_atomic(path, want)
        if not quiet:
            self.act("reindex", f"index rebuilt from the data ({len(entries)} entries)", path)
        return True
