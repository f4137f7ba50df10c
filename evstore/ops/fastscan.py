"""The fast path of verify for stream logs, runnable in worker processes.

A sound stream directory needs few decisions: every frame valid, versions
contiguous from 1, positions increasing, times not decreasing, each index
matching its records.  :func:`summarize` checks exactly that in a tight loop
over the disk layer's frame walker (:func:`evstore.disk.frames.walk`),
without knowing the commit log, and returns a small summary: the digests of
the stream's events after each of its last records (so the caller can pick
the one at the version the commit log commits) and, per segment, how much of
its index matches.  Anything unusual returns None and the caller runs the
detailed check (:func:`evstore.ops.checks.check_stream`), which says what is
wrong and where.

Summaries do not depend on the commit log, so workers compute them while the
parent walks the log: on a machine with two cores verify takes about as long
as the slower of the two walks, not their sum.
"""
from __future__ import annotations

import os
import zlib
from array import array
from collections import deque

from ..disk.format import STREAM_MAGIC
from ..disk.frames import walk
from ..disk.records import RECORD_HEAD
from . import layout as L
from .checks import be_offsets, read_stream_id

#: Digest states kept for the newest records of a stream: enough for an
#: unfinished append and for appends made while verify runs.
RING = 256

_crc32 = zlib.crc32
#: Bytes of a segment read at a time.
WINDOW = 4 << 20


def summarize(path: str):
    """Summary of one stream directory, or None when it needs the detailed check.

    Returns (key, stream id, bytes, records, segments, ring) where segments
    is a list of (first version, records, index entries, index entries
    matching) and ring a list of (version, position, us, segment first,
    offset, end, d0, d1, d2, crc) for the newest records (digest *after* the
    record), oldest first; when the stream has at most RING records the ring
    starts with a (0, ...) entry holding the empty digest.
    """
    sid, why = read_stream_id(path)
    if why:
        return None
    names = L.listdir(path)
    firsts = L.numbered(names, L.STREAM_SEG)
    for name in names:
        if name != L.ID_FILE and not name.endswith((L.STREAM_SEG, L.STREAM_IDX)):
            return None
    # a log may start after version 1 (compaction removed the versions
    # before it); the caller's judge() says whether that start is right
    st = _Digest(firsts[0] if firsts else 1)
    segments = []
    total = 0
    for first in firsts:
        if first != st.v_exp:
            return None
        seg = _summarize_segment(path, first, st)
        if seg is None:
            return None
        total += seg[0]
        segments.append(seg[1])
    return os.path.basename(path), sid, total, st.d0, segments, list(st.ring)


class _Digest:
    """What summarize carries from one segment to the next: the expected
    version, the last position and time, the digest so far, the ring."""

    __slots__ = ("v_exp", "last_p", "last_us", "d0", "d1", "d2", "c", "ring")

    def __init__(self, v_exp: int):
        self.v_exp = v_exp
        self.last_p = self.last_us = self.d0 = self.d1 = self.d2 = self.c = 0
        self.ring = deque([(v_exp - 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)], maxlen=RING + 1)


def _summarize_segment(path: str, first: int, st: _Digest):
    """(bytes, (first, records, index entries, entries matching)) of one
    segment, its records added to ``st``; None when anything is unusual."""
    try:  # the index first: writers append records, then their entries
        ifd = os.open(L.seg_path(path, first, L.STREAM_IDX), L.RDONLY)
    except FileNotFoundError:
        ifd = None
    try:
        fd = os.open(L.seg_path(path, first, L.STREAM_SEG), L.RDONLY)
    except BaseException:
        if ifd is not None:
            os.close(ifd)
        raise
    try:
        isize = os.fstat(ifd).st_size if ifd is not None else 0
        size = os.fstat(fd).st_size
        if isize % 8:
            return None
        k = isize // 8
        nrec = _records(fd, ifd, k, size, first, st)
        if nrec is None:
            return None
        return size, (first, nrec[0], k, nrec[1])
    finally:
        os.close(fd)
        if ifd is not None:
            os.close(ifd)


def _records(fd: int, ifd, k: int, size: int, first: int, st: _Digest):
    """Walk a segment's records (the disk layer's walker, a window at a
    time: a segment holding one huge batch can be far larger than the
    default 64 MiB) into ``st``, comparing the index with the records'
    offsets a run at a time: memory stays flat.  (records, index entries
    matching), or None at the first record that is not as it should be."""
    v_exp, last_p, last_us = st.v_exp, st.last_p, st.last_us
    d0, d1, d2, c = st.d0, st.d1, st.d2, st.c
    rec = RECORD_HEAD.unpack_from
    nrec = match = 0
    matching = True
    offs = array("Q")
    add = offs.append
    keep = st.ring.append
    for ok, pos, end, x in walk(fd, STREAM_MAGIC, size, 0, WINDOW, resync=False):
        if not ok or len(x) < 28:
            return None
        t, a, v, b, p, cc, us = rec(x)
        if (t != 0x97 or a != 0xCF or b != 0xCF or cc != 0xCF or v != v_exp
                or p <= last_p or us < last_us):
            return None
        d0 += 1
        d1 += p
        d2 += us
        c = _crc32(x[28:], c)
        add(pos)
        keep((v, p, us, first, pos, end, d0, d1, d2, c))
        last_p, last_us, v_exp = p, us, v + 1
        if len(offs) >= 65536:
            match, matching = _match_index(ifd, k, nrec, offs, match, matching)
            nrec += len(offs)
            del offs[:]
    match, matching = _match_index(ifd, k, nrec, offs, match, matching)
    st.v_exp, st.last_p, st.last_us = v_exp, last_p, last_us
    st.d0, st.d1, st.d2, st.c = d0, d1, d2, c
    return nrec + len(offs), match


def _match_index(ifd, k: int, done: int, offs, match: int, matching: bool):
    """Compare index entries ``done``.. with the offsets ``offs`` of the
    records found there; (entries matching from the start, still matching)."""
    if not matching or ifd is None:
        return match, False
    n = min(len(offs), k - done)
    if n <= 0:
        return match, matching
    want = be_offsets(offs[:n])
    have = os.pread(ifd, 8 * n, 8 * done)
    if have == want:
        return match + n, n == len(offs)
    j = 0
    while j < n and have[8 * j:8 * j + 8] == want[8 * j:8 * j + 8]:
        j += 1
    return match + j, False


def summarize_many(paths):
    """Worker entry point: summaries (or None) for a chunk of directories."""
    out = []
    for p in paths:
        try:
            out.append((p, summarize(p)))
        except (OSError, ValueError):
            out.append((p, None))
    return out


def judge(summary, committed: int, digest, base: int = 0):
    """Decide a summary against the commit log's view of its stream.

    ``committed`` is the stream's last committed version, ``base`` the last
    version compaction removed from its log (the log starts at base + 1).
    Returns (beyond records, ok): ``ok`` is False when the detailed check
    must run (a digest that disagrees, an index that does not match, too
    few records, a log that does not start at base + 1, or a committed
    version outside the ring).
    """
    _key, _sid, _nbytes, records, segments, ring = summary
    if committed - base > records:
        return None, False
    if (segments[0][0] if segments else base + 1) != base + 1:
        return None, False
    state = None
    for i in range(len(ring) - 1, -1, -1):
        if ring[i][0] == committed:
            state = ring[i]
            beyond = [r[:6] for r in ring[i + 1:]]
            break
    if state is None:
        return None, False
    if committed and (state[6], state[7], state[8], state[9]) != tuple(digest):
        return None, False
    if not committed and digest is not None and digest[0]:
        return None, False
    for first, nrec, k, match in segments:
        need = min(max(committed - first + 1, 0), nrec)
        if match != k or k < need:
            return None, False
    return beyond, True
