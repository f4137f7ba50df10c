"""Where a stream log's committed records end, and what lies past them.

A stream log is a copy of what the commit log holds, laid out for reading one
aggregate fast.  It is trusted only as far as its last record agrees with the
commit log: records past that are leftovers of a batch that never committed
and are invisible to readers (and cut by the next writer).  Two walks decide
it, both over :mod:`evstore.disk.frames`:

* :func:`find_tail` walks back from the end of the newest segment to the
  last record the commit log commits (what every reader and writer asks);
* :func:`recheck` walks forward over every record from a version on, after
  a power cut, when the middle of a file cannot be trusted either: the
  labelled walk of :mod:`evstore.disk.streamwalk`, which verify and repair
  use too.
"""
from __future__ import annotations

import bisect

from ..plain import dataclass  # not dataclasses: start-up time (see there)
from ..backends.files.names import STREAM_IDX
from ..errors import CorruptStore
from .format import STREAM_MAGIC, FrameError
from .frames import frame_before, read_frame, scan
from .index import write_index
from ..model import unpack
from .streamwalk import INSIDE_BATCH, SOUND, label_records


@dataclass
class StreamTail:
    """The committed end of one stream log."""

    version: int = 0
    seg_first: int = 0  #: first version of the segment holding ``version`` (0: none)
    end: int = 0  #: offset just past that record
    position: int = 0
    recorded_us: int = 0
    #: (segment first, offset) from which the file holds bytes that are not
    #: committed records, or None when the log ends cleanly
    cut_from: tuple[int, int] | None = None
    cut_reason: str = ""


# --- the committed tail, walking back ---------------------------------------------

def find_tail(log, is_committed, whole_batches: bool) -> StreamTail:
    """StreamLog.tail's walk (see there) over the segments of ``log``."""
    t = StreamTail()
    head = getattr(is_committed, "head", None)  # the commit log's, when known
    #: True while every record met walking back lies past that head
    in_flight = None
    firsts = log.list_segments()
    for k in range(len(firsts) - 1, -1, -1):
        first = firsts[k]
        fd = log.fd(first)
        r = scan(fd, _resume_offset(log, first, fd), STREAM_MAGIC)
        if r.status != "eof" and t.cut_from is None:
            t.cut_from, t.cut_reason = (first, r.end), f"{r.status}: {r.reason}"
        elif r.end == 0 and t.cut_from is None:
            # A writer killed between creating this segment and its first
            # write.  Left in place it would shadow the versions the next
            # writer puts in the previous segment.
            t.cut_from, t.cut_reason = (first, 0), "an empty segment left by an interrupted roll"
        found, in_flight = _walk_back(log, t, first, fd, r.end, is_committed, whole_batches,
                                      head, in_flight)
        if found:
            return t
    return t


def _resume_offset(log, first: int, fd: int) -> int:
    """The offset of the segment's last record by its index, when that entry
    checks out (the scan for the end starts there), else 0."""
    n = log._index_len(first)
    if n:
        off = log._index_get(first, n - 1)
        try:
            payload, _ = read_frame(fd, off, STREAM_MAGIC)
            if unpack(payload)[0] == first + n - 1:
                return off
        except Exception:  # a stale or damaged entry: scan from the start
            return 0
    return 0


def _walk_back(log, t: StreamTail, first: int, fd: int, end: int, is_committed,
               whole_batches: bool, head, in_flight):
    """Walk segment ``first`` back from ``end`` to the last committed record
    (filling ``t``; (True, in_flight)), marking what lies after it to cut;
    (False, in_flight) when none of its records is committed."""
    while end > 0:
        try:
            off, payload = frame_before(fd, end, STREAM_MAGIC)
            rec = unpack(payload)
        except (FrameError, ValueError) as e:
            if in_flight and t.cut_from is not None:
                # The rest of the batch that was being written when the
                # power failed, torn sector by sector: nothing committed
                # lies after it.  Go on from the valid records before it
                # (a forward scan finds them).
                valid_end = scan(fd, 0, STREAM_MAGIC).end
                if valid_end < end:
                    t.cut_from = (first, valid_end)
                    t.cut_reason = "a torn batch that never committed"
                    end = valid_end
                    continue
            raise CorruptStore(
                f"stream {log.stream!r}: damaged record before offset {end} "
                f"in {log.path(first)}: {e}") from None
        v, p, us = rec[0], rec[1], rec[2]
        in_flight = in_flight is not False and head is not None and p > head
        state = is_committed(v, p)
        if state == INSIDE_BATCH and whole_batches:
            raise CorruptStore(
                f"stream {log.stream!r}: its log in {log.path(first)} ends at version {v} "
                f"(position {p}), inside a committed batch whose later records are "
                "missing; run 'evstore repair' to restore them from the commit log")
        if state:
            t.version, t.seg_first, t.end, t.position, t.recorded_us = v, first, end, p, us
            return True, in_flight
        t.cut_from, t.cut_reason = (first, off), "records of a batch that never committed"
        end = off
    return False, in_flight


# --- after a power cut, walking forward ---------------------------------------------

def recheck(log, low: int, is_committed, keep) -> bool:
    """StreamLog.recheck_from (see there)."""
    firsts = log.list_segments()
    if not firsts:
        return False
    k = max(bisect.bisect_right(firsts, low) - 1, 0)
    expected = firsts[k]
    bad = None
    for first in firsts[k:]:
        if first != expected:
            bad = (first, 0, f"{log.path(first)} starts at version {first}, expected {expected}")
            break
        offsets = []
        for label, off, _v, _p, reason in label_records(log.fd(first), expected,
                                                       is_committed, low):
            if label != SOUND:
                bad = (first, off, reason)
                break
            offsets.append(off)
        expected += len(offsets)
        write_index(log.path(first, STREAM_IDX), offsets)
        if bad is not None:
            break
    if bad is None:
        return False
    first, off, reason = bad
    if expected < low:
        raise CorruptStore(
            f"stream {log.stream!r}: {log.path(first)} offset {off}: {reason}, before "
            f"version {low} which was synced; run 'evstore verify' for a report and "
            "'evstore repair' to restore it from the commit log")
    log.cut(StreamTail(expected - 1, first, off), keep)
    return True

