"""One stream directory checked against the commit log's view of it: what
verify's stream pass and repair's stream rebuild share.

Why its own module: the check walks a stream log record by record and says
which of its records are committed, which are leftovers of an append that
never committed, which are damaged or out of order, and whether the stream
log's digest agrees with the commit log's.  That is one responsibility, and
the largest check in ``ops``; the smaller shared checks (marker, sync-state,
indexes, snapshots) stay in :mod:`evstore.ops.checks`.

The check returns findings (:class:`StreamResult`); it prints and changes
nothing.
"""
from __future__ import annotations

import os
import zlib
from array import array
from dataclasses import dataclass, field

from ..disk.streamwalk import SOUND, stream_records
from . import layout as L
from .checks import index_problem, read_index, read_stream_id
from .progress import NO_PROGRESS
from .report import Problem

_crc32 = zlib.crc32

#: Problems reported per stream (and per commit-log segment); more are counted.
PROBLEMS_PER_STREAM = 20


@dataclass
class StreamResult:
    """What checking one stream directory found."""

    key: str
    path: str
    stream: str | None = None
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    #: records after the committed tail: (version, position, us, segment first, offset, end)
    beyond: list = field(default_factory=list)
    #: segments whose records are sound but whose index is not
    bad_index: list = field(default_factory=list)
    #: the records (not just an index) need rewriting from the commit log
    rebuild: bool = False
    #: the records are sound but say something else than the commit log
    mismatch: bool = False
    #: committed records found (versions 1..found)
    found: int = 0
    records: int = 0
    nbytes: int = 0
    id_bad: bool = False
    segments: list = field(default_factory=list)
    suppressed: int = 0

    def problem(self, *args) -> None:
        if len(self.problems) < PROBLEMS_PER_STREAM:
            self.problems.append(Problem(*args))
        else:
            self.suppressed += 1


class _Walk:
    """The state of one stream's walk, carried from segment to segment: the
    digest of its committed records and where the versions have got to."""

    __slots__ = ("directory", "path", "stream", "head", "committed", "d0", "d1", "d2", "crc",
                 "expect_v", "seen_v", "last_p", "last_us")

    def __init__(self, directory: str, path: str, stream, head: int, base: int, committed: int):
        self.directory, self.path, self.stream, self.head = directory, path, stream, head
        self.committed = committed  # the stream's last committed version
        self.d0 = self.d1 = self.d2 = self.crc = 0  # count, position sum, time sum, CRC
        self.expect_v = base + 1  # the next committed version
        self.seen_v = base  # the last version of any valid record so far, committed or not
        self.last_p = self.last_us = 0


class _Seg:
    """One segment of the stream log as the walk reads it."""

    __slots__ = ("first", "srel", "sound", "v", "seen", "committed_offs", "later_offs")

    def __init__(self, first: int, srel: str):
        self.first, self.srel = first, srel
        self.sound = True  # every record readable and in place: the index is checked
        self.v = first  # the version the next record at its place would have
        self.seen = 0  # readable records
        self.committed_offs = array("Q")  # offsets the index must hold
        self.later_offs = array("Q")  # offsets it may also hold (uncommitted records)


def check_stream(directory: str, key: str, path: str, head: int, known: dict,
                 digests: dict, progress=NO_PROGRESS, bases: dict | None = None) -> StreamResult:
    """Check one stream directory against the commit log's view of it.

    ``known`` maps stream keys to the stream ids the commit log holds;
    ``digests`` maps stream ids to (versions, position sum, time sum, CRC of
    the events' bytes) of their events up to ``head``.  As in the core, the
    records after the version the commit log gives the stream are not
    committed (they are collected in ``beyond``, not judged here).
    ``bases``: stream -> the last version compaction removed from its log,
    which then starts at base + 1 (the digests leave those versions out).
    """
    r = StreamResult(key, path)
    relpath = L.rel(directory, path)
    names = L.listdir(path)
    stream, orphan = _identity(r, path, relpath, key, known)
    firsts = L.numbered(names, L.STREAM_SEG)
    r.segments = firsts
    _strays(r, names, firsts, relpath, stream)
    base = (bases or {}).get(stream, 0) if stream is not None else 0
    committed = base + (digests.get(stream, (0,))[0] if stream is not None else 0)
    w = _Walk(directory, path, stream, head, base, committed)
    for first in firsts:
        _check_segment(r, w, first, first == firsts[-1], progress)
    r.found = base + w.d0
    if stream is None:
        if firsts and not orphan:
            r.problem("stream-id", "stream directory whose stream is unknown (no readable "
                      "id, and the commit log has no stream with this key)", relpath)
        return r
    want = digests.get(stream)
    if want is None:
        return r
    _compare_digest(r, w, want, base, relpath)
    return r


def _identity(r: StreamResult, path: str, relpath: str, key: str, known: dict):
    """``(stream, orphan)``: the stream the directory belongs to (its ``id``
    file's, else the commit log's for its key), and whether it is an orphan:
    no readable id and no committed event, what a power cut leaves of a
    stream whose first batch never committed (a warning, not damage)."""
    sid, why = read_stream_id(path)
    stream = sid if sid is not None else known.get(key)
    orphan = why is not None and known.get(key) is None
    if orphan:
        r.id_bad = True
        r.warnings.append(Problem(
            "stream-id", f"{why}, and no committed event belongs to this directory (left by "
            "a batch that never committed); harmless: repair removes it",
            f"{relpath}/{L.ID_FILE}"))
    elif why:
        r.id_bad = True
        r.problem("stream-id", why, f"{relpath}/{L.ID_FILE}", None, stream)
    r.stream = stream
    return stream, orphan


def _strays(r: StreamResult, names: list, firsts: list, relpath: str, stream) -> None:
    """Warn of files in the directory that are neither the id file, a
    segment nor a segment's index (temporary files are reported elsewhere)."""
    seg_names = {f"{f:016d}{L.STREAM_SEG}" for f in firsts}
    for name in names:
        if name == L.ID_FILE or name in seg_names or L.is_temp(name):
            continue
        if name.endswith(L.STREAM_IDX):
            if name[:-len(L.STREAM_IDX)] + L.STREAM_SEG not in seg_names:
                r.warnings.append(Problem("stream-index", "index without its segment (harmless)",
                                          f"{relpath}/{name}", stream=stream))
        else:
            r.warnings.append(Problem("stream", "unexpected file in a stream directory",
                                      f"{relpath}/{name}", stream=stream))


def _check_segment(r: StreamResult, w: _Walk, first: int, last: bool, progress) -> None:
    """One segment: its name against the versions before it, every record
    (:func:`_check_record`), then its index when its records allow a
    verdict on it."""
    spath = L.seg_path(w.path, first, L.STREAM_SEG)
    seg = _Seg(first, L.rel(w.directory, spath))
    try:
        opening = L.opened(spath)
    except OSError as e:
        r.problem("io", f"cannot open: {e.strerror}", seg.srel, None, w.stream)
        r.rebuild = True
        return
    with opening as fd:
        idx_bytes = read_index(L.seg_path(w.path, first, L.STREAM_IDX))
        size = os.fstat(fd).st_size
        r.nbytes += size
        if first != w.seen_v + 1 and (first <= w.committed or w.seen_v < w.committed):
            what = ("repeats versions already seen (a duplicated segment?)"
                    if first <= w.seen_v else f"versions {w.seen_v + 1}..{first - 1} are missing")
            r.problem("stream", f"segment named for version {first}: {what}",
                      seg.srel, 0, w.stream, first)
            r.rebuild = True
        if idx_bytes and len(idx_bytes) % 8 and last:
            # A torn write of the last entry: the writer overwrites it.
            r.warnings.append(Problem(
                "stream-index", "index ends in a partial entry (a torn write); harmless: "
                "the stream's next writer rewrites it",
                L.rel(w.directory, L.seg_path(w.path, first, L.STREAM_IDX)), None, w.stream))
            idx_bytes = idx_bytes[:len(idx_bytes) - len(idx_bytes) % 8]
        for label, off, end, what, x in stream_records(fd):
            if label == SOUND:
                _check_record(r, w, seg, off, end, what, x)
            else:
                _damaged_record(r, w, seg, off, end, what)
        r.records += seg.seen
        progress.advance(nbytes=size)  # events are counted once, from the log
        if seg.sound or (seg.committed_offs and not r.rebuild):
            _check_segment_index(r, w, seg, last, idx_bytes)


def _check_record(r: StreamResult, w: _Walk, seg: _Seg, off: int, end: int, head, x) -> None:
    """One sound record of a segment (``head``: its version, position, time
    and head length, as :func:`evstore.disk.streamwalk.stream_records` reads
    them).  Past the committed version it is collected in ``beyond`` for the
    caller to judge; up to it, it must continue the versions, keep positions
    increasing and within the log, and time from going back; it joins the
    digest."""
    v, p, us, hl = head
    if seg.seen == 0 and off == 0 and v != seg.first:
        # a segment is named for its first version: this file is a
        # copy or a renamed segment (repair rebuilds the stream
        # from the commit log and removes it)
        r.problem("stream", f"segment named for version {seg.first} starts with "
                  f"version {v}: a stray copy (duplicated or misnamed segment)",
                  seg.srel, 0, w.stream, v, p)
        r.rebuild = True
    seg.seen += 1
    if v == w.seen_v + 1:
        w.seen_v = v
    if v > w.committed or w.expect_v > w.committed:
        r.beyond.append((v, p, us, seg.first, off, end))
        if v == seg.v:
            seg.later_offs.append(off)
            seg.v += 1
        return
    if v != w.expect_v:
        seg.sound = False
        r.rebuild = True
        if v < w.expect_v:
            r.problem("stream", f"record repeats version {v} (expected {w.expect_v})",
                      seg.srel, off, w.stream, v, p)
            return
        r.problem("stream", f"versions {w.expect_v}..{v - 1} are missing before this "
                  "record", seg.srel, off, w.stream, v, p)
    if p <= w.last_p or p > w.head:
        r.problem("stream", f"position {p} is out of order (previous record: "
                  f"{w.last_p}, commit log ends at {w.head})", seg.srel, off, w.stream, v, p)
        r.rebuild = True
    if us < w.last_us:
        r.problem("stream", "recorded_at goes backwards", seg.srel, off, w.stream, v, p)
        r.rebuild = True
    w.d0 += 1
    w.d1 += p
    w.d2 += us
    w.crc = _crc32(x[hl:], w.crc)
    w.expect_v = v + 1
    w.last_p, w.last_us = p, us
    if v == seg.v:
        seg.committed_offs.append(off)
        seg.v += 1
    else:
        seg.sound = False


def _damaged_record(r: StreamResult, w: _Walk, seg: _Seg, off: int, end: int, why) -> None:
    """A record that does not read: after the committed version, the
    leftover of an append that never committed (a warning; its stream's next
    writer cuts it); before, damage that repair rebuilds from the commit log."""
    seg.sound = False
    if w.expect_v > w.committed:
        r.warnings.append(Problem(
            "leftover", f"{end - off} damaged bytes after the last committed "
            f"record ({why}): part of an append that never committed; harmless, "
            "the next writer of this stream moves them to quarantine/",
            seg.srel, off, w.stream))
        r.beyond.append((None, None, None, seg.first, off, end))
    else:
        r.problem("stream", f"damaged record, {end - off} bytes ({why})",
                  seg.srel, off, w.stream, w.expect_v)
        r.rebuild = True


def _check_segment_index(r: StreamResult, w: _Walk, seg: _Seg, last: bool, idx_bytes) -> None:
    """The segment's ``.idx`` against its records' offsets.  Entries past the
    last record of the last segment are harmless leftovers of records lost
    before they committed; anything else wrong marks the index for rewriting."""
    ipath = L.seg_path(w.path, seg.first, L.STREAM_IDX)
    msg = index_problem(ipath, seg.committed_offs, seg.later_offs, "version", seg.first,
                        idx_bytes)
    if msg and last and "past the last" in msg:
        # Entries of records that never committed and are gone
        # (lost by a power cut with --no-sync): the stream's next
        # writer truncates them; readers never follow them.
        r.warnings.append(Problem(
            "stream-index", f"{msg}; harmless: the stream's next writer drops them",
            L.rel(w.directory, ipath), None, w.stream))
    elif msg:
        r.problem("stream-index", msg, L.rel(w.directory, ipath), None, w.stream)
        r.bad_index.append(seg.first)


def _compare_digest(r: StreamResult, w: _Walk, want, base: int, relpath: str) -> None:
    """The stream log's digest against the commit log's: fewer committed
    records is a short stream log; the same count with other contents is a
    mismatch (the caller locates the first differing record).  Either way
    the stream is rebuilt from the commit log."""
    stream = w.stream
    if want[0] > w.d0:
        if not r.rebuild:
            r.problem("stream", f"the stream log ends at version {base + w.d0}; the commit log "
                      f"has versions up to {base + want[0]}", relpath, None, stream,
                      base + w.d0 + 1)
        r.rebuild = True
    elif tuple(want) != (w.d0, w.d1, w.d2, w.crc):
        if not r.rebuild:
            r.mismatch = True
        r.rebuild = True
    if r.suppressed:
        r.problems.append(Problem("stream", f"... and {r.suppressed} more problems in this "
                                  "stream", relpath, stream=stream))
