"""Verify, the stream-log pass: each stream log checked on its own (in worker
processes for a big store), then held against what the commit log gives the
stream; records past the committed end judged; the first differing record of
a mismatched stream located.
"""
from __future__ import annotations

import os
import time

from ..disk.format import LOG_MAGIC
from ..disk.streamdir import stream_key
from . import layout as L
from ..disk.streamwalk import SOUND, stream_records
from .checks import or_none, iter_blobs
from .stream_check import StreamResult, check_stream
from ..disk.frames import walk
from ..disk.heads import batch_head
from .report import Problem

#: Streams whose first differing record verify locates (the others are
#: reported with the digest mismatch only).
DRILL_LIMIT = 32


class StreamChecker:
    """The stream-log pass; mixed into ``verifier._Verifier``."""

    # -- stream logs ------------------------------------------------------------------------
    def stream_pass(self, pool=None) -> None:
        """Every stream directory: the fast summary when it agrees with the
        commit log, the detailed check when it does not (or is missing);
        then streams without a directory, mismatches located, and records
        past the committed ends judged."""
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
        summaries = _summaries(pool)
        for key, path in L.stream_dirs(root):
            if key is None:
                if not L.is_temp(os.path.basename(path)):
                    self.warn("stream", "unexpected entry in streams/", path)
                continue
            seen.add(key)
            if self._stream_summary_agrees(key, path, summaries, digests, beyond_results):
                continue
            r = check_stream(self.dir, key, path, self.head, known, digests, self.progress,
                             self.bases)
            self._take_stream_findings(r, pending)
            if r.mismatch and r.stream not in self.broken_streams:
                mismatched.append(r)
            if r.beyond and r.stream is not None:
                beyond_results[r.stream] = r
        self._streams_without_directory(root, seen, pending)
        if mismatched:
            self.drill(mismatched)
        if beyond_results:
            self.check_beyond(beyond_results)

    def _stream_summary_agrees(self, key, path, summaries, digests, beyond_results) -> bool:
        """The fast path: a stream directory whose summary (fastscan, maybe
        made by a worker process) agrees with the commit log is counted and
        done, its records past the committed end kept for check_beyond.
        False: the detailed check must say what is wrong."""
        from .fastscan import judge, summarize

        s = summaries[path] if path in summaries else or_none(summarize, path)
        if s is None:
            return False
        sid = s[1]
        dg = digests.get(sid)
        base = self.bases.get(sid, 0)
        beyond, ok = judge(s, base + (dg[0] if dg else 0), dg, base)
        if not ok or sid in self.broken_streams:
            return False
        self.nbytes += s[2]
        self.records += s[3]
        self.progress.advance(nbytes=s[2])
        if beyond:
            r = StreamResult(key, path, sid, found=base + (dg[0] if dg else 0))
            r.beyond = beyond
            beyond_results[sid] = r
        return True

    def _take_stream_findings(self, r: StreamResult, pending: bool) -> None:
        """The detailed check's counts and findings, into the report.  After
        a reboot with stream copies still to write back (``pending``), a
        stale index or a short stream log is what the next writer mends: a
        warning, not damage."""
        self.nbytes += r.nbytes
        self.records += r.records
        self.warnings.extend(r.warnings)
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

    def _streams_without_directory(self, root: str, seen: set, pending: bool) -> None:
        """Streams the commit log holds events of but that have no stream
        directory (unless all their events are removed)."""
        for stream in self.versions:
            cut = self.cuts.get(stream)
            if cut is not None and self.versions[stream] < cut.floor:
                continue  # every event of it is removed: compaction removes the directory
            if stream_key(stream) not in seen:
                (self.warn if pending else self.error)(
                    "stream", f"stream has {self.versions[stream]} events in the commit log but "
                    "no stream directory", os.path.join(root, stream_key(stream)[:2],
                                                        stream_key(stream)), stream)

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
        head_now = [None]  # the log's head now, read when first needed
        candidates = []
        for stream, r in beyond.items():
            c = self._beyond_candidate(stream, r, head_now)
            if c is not None:
                candidates.append(c)
        if not candidates:
            return
        top = self.head if head_now[0] is None else head_now[0]
        if any(a == top + 1 for a, *_ in candidates):
            candidates, top = self._settle_beyond(candidates, top)
        starts = {c[0] for c in candidates}
        for c in candidates:
            self._judge_beyond(c, top, starts)

    def _beyond_candidate(self, stream: str, r: StreamResult, head_now: list):
        """One stream's records past its committed tail, judged where the
        stream alone decides (a torn append after a reboot; records that are
        not one batch continuing the stream); otherwise the batch as a
        candidate ``(first position, last position, stream, run, result)``
        for :meth:`_judge_beyond`, or None when there is nothing to judge.
        ``head_now``: ``[the log's head now]``, read once, when a record lies
        past our view's head."""
        recs = [b for b in r.beyond if b[0] is not None]
        if not recs:
            return None
        if head_now[0] is None and any(b[1] > self.head for b in recs):
            head_now[0] = self.current_head()
        top = self.head if head_now[0] is None else head_now[0]
        # records committed after our view of the log are not judged
        judged = [b for b in recs if b[1] <= self.head or b[1] > top]
        if not judged:
            return None
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
            return None
        if len(runs) > 1 or (len(judged) == len(recs)
                             and judged[0][0] != self.versions.get(stream, 0) + 1):
            self.error("stream", f"{len(judged)} records after the stream's committed tail "
                       f"(version {self.versions.get(stream, 0)}) do not form one batch "
                       "continuing it: a duplicated segment, or batches the commit log "
                       "has lost", spath, off, stream, v, p)
            return None
        return (runs[0][0][1], runs[0][-1][1], stream, runs[0], r)

    def _settle_beyond(self, candidates: list, top: int):
        """A batch right after the log's end may be a commit in progress:
        give the writer a moment, then drop the batches it committed.
        Returns the candidates left and the head they are judged against."""
        deadline = time.monotonic() + self.settle
        heads = [top]
        while time.monotonic() < deadline and not self._quiet(heads):
            time.sleep(0.02)
            top = self.current_head()
            heads.append(top)
            if not any(a == top + 1 for a, *_ in candidates):
                break
        return [c for c in candidates if c[0] <= self.head or c[0] > top], top

    def _judge_beyond(self, candidate, top: int, starts: set) -> None:
        """One batch past a stream's committed tail: positions the log gives
        to other streams or one batch right past the log's end that was never
        synced are a leftover (warning); batches past the end that do not
        start right after it, chain into each other, or that sync-state says
        were committed mean the commit log lost batches (error)."""
        a, b, stream, run, r = candidate
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
            with L.opened(path) as fd:
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
        for stream in its:
            self.error("consistency", "the stream log's records differ from the commit log's "
                       "events", todo[stream].path, stream=stream)


def _summaries(pool) -> dict:
    """The stream summaries worker processes made (path -> summary), or
    ``{}``: a lost worker only costs speed (each stream is then summarized
    here)."""
    summaries = {}
    if pool is not None:
        try:
            for fut in pool[1]:
                summaries.update(fut.result())
        except Exception:  # noqa: BLE001 - a lost worker only costs speed
            summaries = {}
    return summaries


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
        with L.opened(spath) as fd:
            for label, off, _end, what, x in stream_records(fd):
                if label != SOUND:
                    continue
                v, p, us, hl = what
                if p > head:
                    return
                yield spath, off, v, p, us, bytes(x[hl:])


def _diff(have, want) -> str:
    names = ("version", "position", "recorded_at", "event data")
    for name, a, b in zip(names, have, want):
        if a != b:
            if name == "event data":
                return "its id, type, data or metadata differ"
            return f"{name} {a} where the commit log has {b}"
    return "?"
