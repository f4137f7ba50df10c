"""Verify, the commit-log pass: every segment's frames (checksums, payloads that
decode whole, dense positions, contiguous versions per stream), segment names,
``.idx`` entries, and whether a torn end is a batch being committed.

Its findings (each stream's versions and digest) are what the stream pass
(verify_streams.py) compares the stream logs against.
"""
from __future__ import annotations

import os
import time
import zlib
from array import array


from ..disk import bigframe
from ..disk.format import LOG_MAGIC
from ..model import check_stream_id, unpack
from . import layout as L
from .checks import index_problem, read_index, iter_blobs
from ..disk.frames import walk
from ..disk.heads import batch_head
from .frames import log_segment_order
from .report import Problem

_crc32 = zlib.crc32


class _LogRun:
    """What the commit-log pass carries from one segment to the next."""

    __slots__ = ("expected", "last_us", "holes", "spans")

    def __init__(self):
        self.expected = 1      # the next position
        self.last_us = 0       # the latest recorded_at so far
        self.holes = False     # positions were missing somewhere before
        self.spans = []        # (first, last position, path) of each segment's accepted frames


class _Segment:
    """One commit-log segment as the pass walks it."""

    __slots__ = ("ldir", "first", "path", "size", "last_seg", "misnamed", "idx_bytes",
                 "entries", "sound", "first_frame", "repeats", "held", "pend_events",
                 "pend_from", "last_bad")

    def __init__(self, ldir, first, path, size, last_seg, misnamed):
        self.ldir, self.first, self.path, self.size = ldir, first, path, size
        self.last_seg, self.misnamed = last_seg, misnamed
        self.idx_bytes = None
        self.entries = array("Q")  # each accepted position's frame offset (the index)
        self.sound = True          # no damage, nothing out of order: the index is checked
        self.first_frame = True
        self.repeats = []  # [offset, first, last position, stream, version] of a run of repeats
        self.held = []     # positions accepted from this segment: [first, last]
        self.pend_events, self.pend_from = 0, 0  # progress not yet reported
        self.last_bad = None  # the problem of the damaged frame just before, if any


class LogChecker:
    """The commit-log pass; mixed into ``verifier._Verifier``."""

    # -- the commit log -----------------------------------------------------------------
    def log_pass(self) -> None:
        """Walk every commit-log segment in position order, then judge the
        torn or damaged end (if any) once the whole log is known."""
        ldir = os.path.join(self.dir, L.LOG_DIR)
        if not os.path.isdir(ldir):
            self.error("log", "the log/ directory is missing", ldir)
            return
        names = L.listdir(ldir)
        firsts = L.numbered(names, L.LOG_SEG)
        self._log_strays(ldir, names, firsts)
        sizes = {f: L.file_size(L.seg_path(ldir, f, L.LOG_SEG)) for f in firsts}
        run = _LogRun()
        # in the order of the positions held: a stray copy under a wrong name
        # comes after the real segment (see log_segment_order), and is
        # reported as one problem, not as real segments that repeat it
        order = log_segment_order(ldir, firsts, L.LOG_SEG)
        for k, (first, fp0, misnamed) in enumerate(order):
            last_seg = k == len(order) - 1
            path = L.seg_path(ldir, first, L.LOG_SEG)
            # the view of the live segment: what is there now
            size = L.file_size(path) if last_seg else sizes[first]
            seg = _Segment(ldir, first, path, size, last_seg, misnamed)
            seg.idx_bytes = read_index(L.seg_path(ldir, first, L.LOG_IDX))
            self._log_segment(run, seg)
            self._log_segment_end(run, seg, fp0)
        self.last_first = firsts[-1] if firsts else 0
        self._log_judge_tail(ldir)
        self.events = self.head

    def _log_strays(self, ldir: str, names: list, firsts: list) -> None:
        """Warn of files in log/ that are neither a segment nor its index
        (temporary files are temp_check's)."""
        segs = {f"{f:016d}{L.LOG_SEG}" for f in firsts}
        for name in names:
            if name in segs or L.is_temp(name):
                continue
            if name.endswith(L.LOG_IDX) and name[:-len(L.LOG_IDX)] + L.LOG_SEG in segs:
                continue
            self.warn("log", "unexpected file in log/ (an index without its segment?)",
                      os.path.join(ldir, name))

    def _log_segment(self, run: "_LogRun", seg: "_Segment") -> None:
        """Every frame of one segment: damaged ones reported (or kept as the
        candidate torn tail), sound ones checked for order and accounted."""
        with L.opened(seg.path) as fd:
            for ok, off, end, x in walk(fd, LOG_MAGIC, seg.size, big=True):
                if not ok:
                    self._log_bad_frame(run, seg, off, end, x)
                    continue
                head = self._log_decode(run, seg, off, x)
                if head is None:
                    continue
                if seg.first_frame:
                    seg.first_frame = False
                    if seg.misnamed:
                        seg.sound = False
                if head[2] != run.expected and self._log_out_of_order(run, seg, off, head):
                    continue  # a repeat of positions already held
                seg.last_bad = None
                if head[0] == "":
                    self._log_gap_frame(run, seg, off, head)
                else:
                    self._log_batch(run, seg, off, x, head)
                self._log_accepted(run, seg, end, head[2], head[4])

    def _log_bad_frame(self, run, seg, off: int, end: int, reason) -> None:
        """A frame that fails its checks: at the very end of the live
        segment it may be a torn (or in-progress) append, judged later;
        anywhere else it is damage repair can mend from the stream logs."""
        if seg.last_seg and end == seg.size:
            self.tail = (seg.first, off, seg.size, reason)
            return
        self.error("log", f"damaged frame, {end - off} bytes ({reason}); the "
                   "events in it are read from their stream-log copies by "
                   "'evstore repair'", seg.path, off, position=run.expected)
        seg.last_bad = len(self.problems) - 1
        seg.sound = False

    def _log_decode(self, run, seg, off: int, x):
        """The frame's batch head, with the payload checked to decode whole;
        None (and an error) when a frame that passes its checksum does not."""
        try:
            head = stream, _fv, _fp, _us, _n, hl = batch_head(x)
            if stream == "":
                if hl != len(x):
                    raise ValueError("a gap frame holds more than its head")
            else:
                _check_payload(x)
                check_stream_id(stream, new=False)
        except Exception as e:  # noqa: BLE001 - any decoding failure is damage here
            self.error("log", f"frame passes its checksum but does not decode ({e})",
                       seg.path, off, position=run.expected)
            seg.sound = False
            return None
        return head

    def _log_out_of_order(self, run, seg, off: int, head) -> bool:
        """A frame whose first position is not the next one.  Below it: a
        repeat, gathered into runs (True: the frame is skipped).  Above it:
        missing positions, named on the damaged frame that explains them
        when there is one (False: the frame is then accounted)."""
        stream, fv, fp, _us, n, _hl = head
        seg.sound = False
        if fp < run.expected:
            rep = seg.repeats
            if rep and rep[2] + 1 == fp:
                rep[2] = fp + n - 1
            else:
                self._repeats(seg.path, rep, run.spans)
                seg.repeats = [off, fp, fp + n - 1, stream, fv]
            return True
        expected = run.expected
        gap = f"{expected}" if fp - 1 == expected else f"{expected}..{fp - 1}"
        if seg.last_bad is not None and seg.last_bad < len(self.problems):
            p = self.problems[seg.last_bad]  # the damage explains the gap
            self.problems[seg.last_bad] = Problem(
                p.kind, p.message.replace("damaged frame,", f"damaged frame "
                                          f"(positions {gap}),", 1),
                p.file, p.offset, p.stream, p.version, p.position)
        else:
            self.error("log", f"positions {gap} are missing before this frame",
                       seg.path, off, position=expected)
        run.holes = True
        return False

    def _log_gap_frame(self, run, seg, off: int, head) -> None:
        """A gap frame: positions compaction removed, accounted for (one
        index entry each, no stream versions)."""
        _stream, _fv, fp, us, n, _hl = head
        if us < run.last_us:
            self.warn("log", "recorded_at goes backwards", seg.path, off, position=fp)
        else:
            run.last_us = us
        seg.entries.extend([off] * n)

    def _log_batch(self, run, seg, off: int, x, head) -> None:
        """A batch: its stream's versions continue (or jump only below the
        stream's floor), its time does not go back, and its events go into
        the stream's digest the stream pass compares the stream log with."""
        stream, fv, fp, us, n, hl = head
        prev = self.versions.get(stream, 0)
        # a jump is sound only below the stream's floor: the
        # versions before fv are removed (those still here, not
        # yet compacted, are not readable either)
        if fv != prev + 1 and not (fv > prev and self._removed_ok(stream, fv)):
            why = (" (the versions between are in the damaged or missing frames "
                   "above)" if run.holes and fv > prev + 1 else "")
            self.error("log", f"stream {stream!r} jumps from version {prev} to "
                       f"{fv}{why}", seg.path, off, stream, fv, fp)
            self.broken_streams.add(stream)
        if us < run.last_us:
            self.warn("log", "recorded_at goes backwards", seg.path, off, stream, fv, fp)
        else:
            run.last_us = us
        self.versions[stream] = fv + n - 1
        self._log_digest(stream, x, fv, fp, us, n, hl)
        if n == 1:
            seg.entries.append(off)
        else:
            seg.entries.extend([off] * n)
        seg.pend_events += n

    def _log_digest(self, stream: str, x, fv: int, fp: int, us: int, n: int, hl: int) -> None:
        """Add a batch's events to its stream's digest (count, sum of
        positions, sum of times, CRC of the event bodies), leaving out the
        events below the stream's floor: the stream log no longer holds them."""
        dg = self.digests.get(stream)
        if dg is None:
            dg = self.digests[stream] = [0, 0, 0, 0]
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

    def _log_accepted(self, run, seg, end: int, fp: int, n: int) -> None:
        """A frame taken into the view: the head moves to its last position,
        the segment's held range grows, progress is reported now and then."""
        run.expected = expected = fp + n
        if seg.held:
            seg.held[1] = expected - 1
        else:
            seg.held = [fp, expected - 1]
        self.head = expected - 1
        self.log_end = (seg.first, end)
        if seg.pend_events >= 4096:
            self.progress.advance(events=seg.pend_events, nbytes=end - seg.pend_from)
            seg.pend_events, seg.pend_from = 0, end

    def _log_segment_end(self, run, seg, fp0: int) -> None:
        """After a segment's frames: its name, its runs of repeats, its
        index (only when every frame was sound), an empty segment."""
        if seg.misnamed:
            what = ("and holds only positions that other segments hold: a stray copy "
                    "(duplicated or misnamed segment); 'evstore repair' removes it"
                    if not seg.held else "which is not its name: a misnamed segment; "
                    "'evstore repair' moves its frames under the right name")
            self.error("log", f"segment named for position {seg.first} starts with position "
                       f"{fp0} {what}", seg.path, 0, position=fp0)
        self._repeats(seg.path, seg.repeats, run.spans)
        if seg.held:
            run.spans.append((seg.held[0], seg.held[1], seg.path))
        self.nbytes += seg.size
        self.progress.advance(events=seg.pend_events, nbytes=seg.size - seg.pend_from)
        if seg.sound and seg.entries:
            self._check_log_index(seg.ldir, seg.first, seg.path, seg.entries, seg.last_seg,
                                  seg.size, seg.idx_bytes)
        elif seg.sound and not seg.entries and not seg.last_seg:
            self.error("log", "empty segment", seg.path, 0)

    def _log_judge_tail(self, ldir: str) -> None:
        """The damaged end of the live segment: a commit that finished
        meanwhile (nothing), committed events lost (sync-state says so), an
        append that never committed (a warning: writers cut it), or damage
        writers refuse to cut."""
        if self.tail is None:
            return
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
        from ..disk.frames import scan, tail_is_torn

        with L.opened(path) as fd:
            status = scan(fd, off, LOG_MAGIC).status
            if status == "short":
                return True
            # as the writer decides: only a known, new boot id is a reboot
            rebooted = current_boot_id() is not None and self._rebooted()
            return tail_is_torn(status, rebooted, fd, off, LOG_MAGIC)

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
                opening = L.opened(path)
            except OSError:
                return False
            with opening as fd:
                size = os.fstat(fd).st_size
                for ok, _o, _e, _x in walk(fd, LOG_MAGIC, size, off, big=True):
                    if ok:
                        return True
                    break
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
                opening = L.opened(path)
            except OSError:
                break
            with opening as fd:
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
        return head

    def check_state(self) -> None:
        if self.synced > self.head:
            self.error("sync-state", f"sync-state says stream logs were synced up to position "
                       f"{self.synced}, but the commit log ends at {self.head}: committed "
                       "batches are missing from the commit log",
                       os.path.join(self.dir, L.STATE_FILE), position=self.head + 1)


def _check_payload(x) -> None:
    """Raise unless a commit-log payload decodes whole into a batch's shape,
    with the readers' decoder.  A big one (bigframe.BigPayload) is decoded
    an event at a time."""
    if not isinstance(x, bigframe.BigPayload):
        _check_items(unpack(x))
        return
    for ev in bigframe.decode(x).events():  # the readers' own lazy decoding
        if type(ev.id) is not str:
            raise ValueError("an event id is not a string")
        if type(ev.type) is not str or not ev.type:
            raise ValueError("an event type is not a non-empty string")


def _check_items(items) -> None:
    if not isinstance(items, list) or len(items) < 8 or (len(items) - 4) % 4:
        raise ValueError("payload has the wrong shape")
    for eid in items[4::4]:
        if type(eid) is not str:
            raise ValueError("an event id is not a string")
    for t in items[5::4]:
        if type(t) is not str or not t:
            raise ValueError("an event type is not a non-empty string")
