"""The records of a stream segment, walked forward, each with one label.

Recovery after a power cut, verify and repair all go through a stream
segment record by record and ask the same questions of each: is it a valid
frame, does its head say which version and position it holds, is it the
version that belongs there, does the commit log hold it.  This module
answers them once, over :func:`evstore.disk.frames.walk`:

* :data:`SOUND` -- a valid frame whose head reads (version, position, time);
* :data:`UNREADABLE` -- a valid frame that is not a stream record;
* :data:`DAMAGED` -- bytes that are not a valid frame (with resync: up to
  the next valid one);
* :data:`TORN` -- the file ends inside a frame: an append that never
  completed (:func:`evstore.disk.frames.end_status`);

and, for a segment checked against what it should hold
(:func:`label_records`), :data:`MISPLACED` (not the version that belongs
there) and :data:`UNCOMMITTED` (a record the commit log does not hold).
"""
from __future__ import annotations

from .format import STREAM_MAGIC
from .frames import CHUNK, end_status, file_size, walk
from .heads import record_head
from ..model import unpack

SOUND, UNREADABLE, DAMAGED, TORN = "sound", "unreadable", "damaged", "torn"
MISPLACED, UNCOMMITTED = "misplaced", "uncommitted"

#: What a commit check answers of one stream record (``is_committed(v, p)``).
NOT_COMMITTED, COMMITTED, INSIDE_BATCH = 0, 1, 2


def stream_records(fd: int, resync: bool = True, chunk: int = CHUNK):
    """Yield ``(label, offset, end, what, payload)`` for the bytes of a
    stream segment in file order.  ``what`` is (version, position,
    recorded_us, head length) for a :data:`SOUND` record (``payload`` its
    payload, a memoryview valid until the next item), else the reason.
    Without ``resync`` the walk ends at the first bytes that are not a frame."""
    size = file_size(fd)
    for ok, off, end, x in walk(fd, STREAM_MAGIC, size, 0, chunk, resync=resync):
        if not ok:
            if end == size and end_status(fd, off, size, STREAM_MAGIC, x)[0] == "short":
                yield TORN, off, end, x, None
            else:
                yield DAMAGED, off, end, x, None
            continue
        try:
            head = record_head(x)
        except (ValueError, IndexError):
            yield UNREADABLE, off, end, "unreadable record", None
            continue
        yield SOUND, off, end, head, x


def label_records(fd: int, expected: int, is_committed=None, low: int = 0):
    """Yield ``(label, offset, version, position, reason)`` for the records
    of one stream segment, in file order, from the one that should hold
    version ``expected``; the walk ends after the first that is not
    :data:`SOUND`.  A record must decode whole (the readers' decoder) and
    be the next version; ``is_committed(version, position)``, when given,
    labels a record from version ``low`` on that the commit log does not
    hold :data:`UNCOMMITTED`."""
    size = file_size(fd)
    for label, off, _end, what, x in stream_records(fd, resync=False):
        if label in (DAMAGED, TORN):
            status, why = end_status(fd, off, size, STREAM_MAGIC, what)
            yield label, off, None, None, f"{status}: {why}"
            return
        if label == UNREADABLE:
            yield UNREADABLE, off, None, None, "an undecodable record"
            return
        try:
            v, p = unpack(x)[:2]
            if type(v) is not int or type(p) is not int:
                raise ValueError("version and position must be integers")
        except Exception:  # msgpack raises several kinds; all mean damage
            yield UNREADABLE, off, None, None, "an undecodable record"
            return
        if v != expected:
            yield MISPLACED, off, v, p, f"version {v} where version {expected} belongs"
            return
        if is_committed is not None and v >= low and is_committed(v, p) == NOT_COMMITTED:
            yield UNCOMMITTED, off, v, p, f"version {v} at position {p} is not in the commit log"
            return
        yield SOUND, off, v, p, ""
        expected += 1
