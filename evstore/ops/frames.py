"""Verify's and repair's view of segment files, built on the disk layer's walker.

The core's readers stop at the first bad frame (a torn tail, or damage that
only ``evstore repair`` may touch).  Verify and repair must see past it:
they walk with :func:`evstore.disk.frames.walk`'s resync (every intact frame
of a file, and the exact byte ranges that are not frames), and decode heads
with the disk layer's parsers (:mod:`evstore.disk.heads`), which read only
the few msgpack fields that locate an event without decoding its data; they
import those from there.  What is ops' own, and lives here, is the order of
commit-log segments when one sits under a wrong name.
"""
from __future__ import annotations

import os

from ..disk.format import LOG_MAGIC
from ..disk.frames import frame_at, walk
from ..disk.heads import batch_head
from . import layout as L


# --- segment order ------------------------------------------------------------

def first_position(fd: int, size: int):
    """The first position of the first valid, readable frame of a commit-log
    segment (None when it holds none), and whether that frame is at offset 0."""
    payload = frame_at(fd, LOG_MAGIC, 0, size, head=True)  # the usual case: one small read
    if payload is not None:
        try:
            return batch_head(payload)[2], True
        except (ValueError, IndexError, UnicodeDecodeError):
            pass
    for ok, off, _end, x in walk(fd, LOG_MAGIC, size, chunk=1 << 16, big=True):
        if ok:
            try:
                return batch_head(x)[2], off == 0
            except (ValueError, IndexError, UnicodeDecodeError):
                continue
    return None, False


def log_segment_order(ldir: str, firsts, suffix: str) -> list[tuple[int, int | None, bool]]:
    """The commit-log segments ``firsts`` in the order of the positions they
    hold: ``(name, first position held, misnamed)`` triples (``misnamed``: a
    valid first frame that is not the name's position).

    Why: a segment is named for its first position, so name order is
    position order -- unless a file sits under a wrong name (a segment copied
    or renamed by hand: ``81.log`` copied to ``2.log``).  Walked in name
    order, such a stray puts positions 81.. before 41..80, every real frame
    after it looks like a repeat, and a walker that trusts the first frame it
    meets for a position would throw the real segments away.  Ordered by
    what they hold, with a segment whose name agrees with its first frame
    before a stray holding the same positions, the stray's frames are the
    ones that repeat positions already present; a misnamed segment that is
    the only copy of its positions still fills its place.  For a sound store
    this is name order.
    """
    keyed = []
    for first in firsts:
        path = os.path.join(ldir, f"{first:016d}{suffix}")
        try:
            opening = L.opened(path)
        except OSError:
            keyed.append(((first, 0, first), first, None, False))
            continue
        with opening as fd:
            fp, at_zero = first_position(fd, os.fstat(fd).st_size)
        if fp is None:
            keyed.append(((first, 0, first), first, None, False))
        else:
            # a name that agrees with the first frame (or a segment whose
            # head is damaged but whose name is below what it holds) wins ties
            fits = fp == first or (not at_zero and first < fp)
            keyed.append(((fp, 0 if fits else 1, first), first, fp, at_zero and fp != first))
    keyed.sort()
    return [item[1:] for item in keyed]
