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
from .frames import batch_head, log_segment_order, walk
from .report import Problem

_crc32 = zlib.crc32


class LogChecker:
    """The commit-log pass; mixed into ``verifier._Verifier``."""

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
        from ..disk.frames import scan, tail_is_torn

        fd = os.open(path, L.RDONLY)
        try:
            status = scan(fd, off, LOG_MAGIC).status
            if status == "short":
                return True
            # as the writer decides: only a known, new boot id is a reboot
            rebooted = current_boot_id() is not None and self._rebooted()
            return tail_is_torn(status, rebooted, fd, off, LOG_MAGIC)
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
