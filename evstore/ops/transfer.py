"""``export`` and ``import``: moving recorded events between stores as NDJSON.

Export writes each event as ``jsonio.dumps(RecordedEvent.to_dict())`` -- the
bytes ``evstore read --all`` prints -- in position order.  Import reads that
back keeping everything, so ``export | import | export`` is byte-identical.

Export of the whole store reads the commit log batch by batch and encodes a
batch's ids, types, data and metadata in one call of the C JSON encoder
(:func:`batch_lines`), which is what makes it faster than reading the same
events out of SQLite.  Import is in :mod:`evstore.ops.importer`.
"""
from __future__ import annotations

import heapq
import json
import os
import re
from json.encoder import c_make_encoder, encode_basestring

from ..model import format_timestamp, us_to_datetime
from .progress import NO_PROGRESS

# The encoder json.dumps(obj, ensure_ascii=False) uses, built once.  With
# markers=None it skips the circular-reference check (decoded msgpack has
# no cycles); everything else -- separators, float repr, escaping -- is
# the same, so lines are byte for byte what jsonio.dumps makes.
_encoder = c_make_encoder(None, json.JSONEncoder(ensure_ascii=False).default, encode_basestring,
                          None, ": ", ", ", False, False, True) if c_make_encoder else None

#: What separates values in one call of the encoder: an integer no event is
#: likely to hold (and if one does, the count check below notices).
_MARK = -7140916482290745613


def _dumps(obj) -> str:
    if _encoder is None:  # pragma: no cover - CPython always has the C encoder
        return json.dumps(obj, ensure_ascii=False)
    if type(obj) is str:
        return encode_basestring(obj)
    return "".join(_encoder(obj, 0))


_MARK_SEP = f", {_MARK}, "
_NOT_ID_CHAR = re.compile(r"[^0-9a-f-]").search


class _Stamps:
    """recorded_at text for microsecond times; the date part is computed
    once per second, not once per batch."""

    def __init__(self):
        self.sec = None
        self.prefix = ""

    def __call__(self, us: int) -> str:
        sec, micro = divmod(us, 1_000_000)
        if sec != self.sec:
            self.sec = sec
            self.prefix = format_timestamp(us_to_datetime(sec * 1_000_000))[:19]
        return f"{self.prefix}.{micro:06d}Z"


def chunk_lines(batches, stamps=None, types=None, heads=None) -> list[str]:
    """The NDJSON lines (without newlines) of commit-log batches, each given
    as its decoded payload: [stream, first version, first position,
    recorded_us, id, type, data, metadata, id, ...].

    The data of all events is encoded in one call of the C encoder, with a
    marker string between events; splitting on the marker is safe because
    the count is checked (a marker inside event data adds one, and then the
    events are encoded one by one).  Ids are canonical UUIDs (checked), so
    they need no escaping; types and empty metadata come from a cache.
    """
    stamps = stamps or _Stamps()
    types = {} if types is None else types
    heads = {} if heads is None else heads
    datas = []
    for b in batches:
        datas += b[6::4]
    flat = [_MARK] * (2 * len(datas) - 1)
    flat[0::2] = datas
    encoded = _dumps(flat)[1:-1].split(_MARK_SEP) if datas else []
    if len(encoded) != len(datas):
        encoded = [_dumps(d) for d in datas]
    out = []
    k = 0
    for b in batches:
        stream, fv, fp, us = b[0], b[1], b[2], b[3]
        ids = b[4::4]
        joined = "".join(ids)
        if len(joined) != 36 * len(ids) or _NOT_ID_CHAR(joined):
            ids = [_dumps(i)[1:-1] for i in ids]
        pre = heads.get(stream)
        if pre is None:
            if len(heads) > 65536:
                heads.clear()
            pre = heads[stream] = f'{{"stream": {_dumps(stream)}, "version": '
        n = len(ids)
        tail = f'"recorded_at": "{stamps(us)}"}}'
        for v, p, eid, t, data, m in zip(range(fv, fv + n), range(fp, fp + n), ids, b[5::4],
                                        encoded[k:k + n], b[7::4]):
            tj = types.get(t)
            if tj is None:
                if len(types) > 65536:
                    types.clear()
                tj = types[t] = _dumps(t)
            out.append(f'{pre}{v}, "position": {p}, "id": "{eid}", "type": {tj}, "data": {data}, '
                       f'"metadata": {"{}" if m == {} and type(m) is dict else _dumps(m)}, {tail}')
        k += n
    return out


def batch_lines(stream: str, fv: int, fp: int, us: int, fields: list) -> list[str]:
    """The NDJSON lines of one batch (see :func:`chunk_lines`)."""
    return chunk_lines([[stream, fv, fp, us, *fields]])


def _log_payloads(directory: str, start: int, head: int):
    """Decoded commit-log payloads holding positions ``start``..``head``
    (a committed head: a batch boundary), read segment by segment (the
    index finds where to start).  A damaged frame is CorruptStore: export
    reads sound stores."""
    import msgpack

    from ..disk.bigframe import BigPayload, LazyBatch
    from ..disk.commitlog import CommitLog
    from ..disk.records import decode_batch_head
    from ..errors import CorruptStore
    from ..disk.format import LOG_MAGIC
    from . import layout as L
    from .frames import walk

    log = CommitLog(os.path.join(directory, L.LOG_DIR))
    try:
        t = log.refresh()
        last_first, last_end = t.seg_first, t.end
        if start > head or head > t.head:
            return
        first, off = log.locate(start)
    finally:
        log.close()
    unpackb = msgpack.unpackb
    ldir = os.path.join(directory, L.LOG_DIR)
    for seg in L.numbered(L.listdir(ldir), L.LOG_SEG):
        if seg < first:
            continue
        path = L.seg_path(ldir, seg, L.LOG_SEG)
        fd = os.open(path, L.RDONLY)
        try:
            size = last_end if seg == last_first else os.fstat(fd).st_size
            for ok, o, _e, x in walk(fd, LOG_MAGIC, size, off if seg == first else 0, big=True):
                if not ok:
                    raise CorruptStore(f"commit log {path}: damaged frame at offset {o} ({x}); "
                                       "run 'evstore verify'")
                if isinstance(x, BigPayload):
                    # a huge batch: decoded and yielded 1024 events at a time
                    # (each piece a batch of its own), never whole
                    b = LazyBatch(x, decode_batch_head(x.prefix()))
                    if b.first_position > head:
                        return
                    skip = max(start - b.first_position, 0)
                    for i, fields in b.fields_chunks(skip):
                        if b.first_position + i > head:
                            return
                        yield [b.stream, b.first_version + i, b.first_position + i,
                               b.recorded_us, *fields]
                    continue
                items = unpackb(x, raw=False, strict_map_key=False)
                if items[2] > head:
                    return
                if items[0] == "":
                    continue  # a gap frame: positions compaction removed
                yield items
        finally:
            os.close(fd)
        if seg >= last_first:
            return


class _Out:
    """NDJSON, or one JSON array, written in large pieces."""

    def __init__(self, out, fmt: str):
        self.out = out
        self.array = fmt == "json"
        self.count = 0
        self.nbytes = 0
        self._parts: list[str] = []
        self._size = 0

    def lines(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.array:
            head = "[\n" if self.count == 0 else ",\n"
            text = head + ",\n".join(lines)
        else:
            text = "\n".join(lines) + "\n"
        self.count += len(lines)
        self._parts.append(text)
        self._size += len(text)
        if self._size >= 1 << 20:
            self.flush()

    def text(self, data: bytes, count: int) -> None:
        """Pre-formatted lines (for an array: each with its ",\\n" first)."""
        if not count:
            return
        self.flush()
        if self.array and self.count == 0:
            data = b"[\n" + data[2:]
        self.out.write(data)
        self.nbytes += len(data)
        self.count += count

    def flush(self) -> None:
        if self._parts:
            data = "".join(self._parts).encode("utf-8")
            self.out.write(data)
            self.nbytes += len(data)
            self._parts.clear()
            self._size = 0

    def close(self) -> None:
        if self.array:
            self._parts.append("[]\n" if self.count == 0 else "\n]\n")
        self.flush()
        self.out.flush()


def export_events(store, out, *, streams=None, from_position: int = 1, fmt: str = "ndjson",
                  progress=None, workers: int | None = None, since=None, until=None) -> int:
    """Write recorded events to the binary stream ``out`` in position order:
    the whole store, or only ``streams``; from ``from_position`` on, and
    recorded between ``since`` and ``until`` (aware datetimes, inclusive;
    None: open).  Returns how many events were written.  Raises
    StreamNotFound (before writing anything) when a named stream has no
    events.  ``workers``: processes that format events for a whole-store
    export (None: one per CPU when the export is large; 1: none)."""
    progress = progress or NO_PROGRESS
    w = _Out(out, fmt)
    if streams:
        its = [_positions_from(store.read(s, since=since, until=until), from_position)
               for s in dict.fromkeys(streams)]
        progress.begin("export", total_events=sum(store.version(s) for s in dict.fromkeys(streams)))
        try:
            buf = []
            for ev in heapq.merge(*its, key=lambda e: e.position):
                buf.append(_dumps(ev.to_dict()))
                if len(buf) >= 1024:
                    w.lines(buf)
                    progress.advance(events=len(buf))
                    buf = []
            w.lines(buf)
            progress.advance(events=len(buf))
            w.close()
        finally:
            progress.end()
        return w.count
    if since is not None or until is not None:
        return _export_window(store, w, max(from_position, 1), since, until, progress)
    start = max(from_position, 1)
    head = store.head()
    total = max(head - start + 1, 0)
    progress.begin("export", total_events=total)
    try:
        if store.directory is None or _forgets(store):
            # any backend: its read_all, event by event (which leaves out
            # what delete, truncate and retention made unreadable)
            _write_events(w, store.read_all(from_position=start, to_position=head), progress)
            w.close()
            return w.count
        # A directory: the commit log's batches formatted without decoding
        # each event into objects, by several processes when it is large
        # (by this one alone when events were removed: it filters them).
        view = store.forgetting()
        keep = None if view.empty else _readable_batches(store, view)
        n = workers if workers is not None else (
            (os.cpu_count() or 1) if total >= PARALLEL_EVENTS else 1)
        ctx = None
        if n > 1 and total > TASK_EVENTS and keep is None:
            from .checks import mp_context

            ctx = mp_context()
        if ctx is None:
            for lines in _range_lines(store.directory, start, head, keep):
                w.lines(lines)
                progress.advance(events=len(lines))
        else:
            for text, count in _parallel(store.directory, start, head, n, ctx, w.array):
                w.text(text, count)
                progress.advance(events=count)
        w.close()
    finally:
        progress.end()
    return w.count


def _forgets(store) -> bool:
    """Whether any event may be unreadable (a cut or a retention rule):
    then the commit log's batches are not what export writes."""
    b = store.backend
    return bool(b.cuts()) or bool(b.retention_rules())


def _write_events(w, events, progress) -> None:
    buf = []
    for ev in events:
        buf.append(_dumps(ev.to_dict()))
        if len(buf) >= 1024:
            w.lines(buf)
            progress.advance(events=len(buf))
            buf = []
    w.lines(buf)
    progress.advance(events=len(buf))


#: Exports of at least this many events are formatted by worker processes
#: (one per CPU), each taking TASK_EVENTS positions at a time.
PARALLEL_EVENTS = 150_000
TASK_EVENTS = 50_000


def _readable_batches(store, view):
    """A function giving the readable part of one commit-log batch (see
    :func:`chunk_lines`), or None when nothing of it is readable.  A batch
    is one stream at one time, and a stream's removed events are a prefix
    of its versions, so what is readable is a suffix of the batch."""
    memo: dict = {}

    def keep(b):
        stream = b[0]
        got = memo.get(stream)
        if got is None:
            got = memo[stream] = (view.first_version(stream, store.version(stream)),
                                  view.oldest_us(stream))
        first, oldest = got
        if oldest is not None and b[3] < oldest:
            return None
        skip = first - b[1]
        if skip <= 0:
            return b
        if skip >= (len(b) - 4) // 4:
            return None
        b = b[:4] + b[4 + 4 * skip:]
        b[1] += skip
        b[2] += skip
        return b

    return keep


def _range_lines(directory: str, start: int, end: int, keep=None):
    """Lists of NDJSON lines for positions start..end, a chunk at a time
    (``keep``: see :func:`_readable_batches`)."""
    stamps, types, heads = _Stamps(), {}, {}
    chunk, size = [], 0
    for b in _log_payloads(directory, start, end):
        fp, n = b[2], (len(b) - 4) // 4
        if fp < start:  # a batch that begins before start
            b = b[:4] + b[4 + 4 * (start - fp):]
            b[1] += start - fp
            b[2] = fp = start
            n = (len(b) - 4) // 4
        if fp + n - 1 > end:  # ... or ends after end (a range a worker was given)
            b = b[:4 + 4 * (end - fp + 1)]
            n = end - fp + 1
        if keep is not None:
            b = keep(b)
            if b is None:
                continue
            n = (len(b) - 4) // 4
        chunk.append(b)
        size += n
        if size >= 1024:
            yield chunk_lines(chunk, stamps, types, heads)
            chunk, size = [], 0
    if chunk:
        yield chunk_lines(chunk, stamps, types, heads)


def _format_range(directory: str, start: int, end: int, array: bool):
    """Worker: the text of positions start..end, as _Out would write it
    (for an array, each line preceded by its separator), and the count."""
    parts, count = [], 0
    for lines in _range_lines(directory, start, end):
        count += len(lines)
        if array:
            parts.append("".join(",\n" + line for line in lines))
        else:
            parts.append("\n".join(lines) + "\n")
    return "".join(parts).encode("utf-8"), count


def _parallel(directory, start, head, workers, ctx, array):
    """Ranges of TASK_EVENTS positions formatted by ``workers`` processes --
    this one included: it formats every ``workers``-th range itself rather
    than wait -- yielded in position order, with at most two ranges per
    worker process in flight."""
    from concurrent.futures import ProcessPoolExecutor

    ranges = [(a, min(a + TASK_EVENTS - 1, head)) for a in range(start, head + 1, TASK_EVENTS)]
    mine = {i for i in range(len(ranges)) if i % workers == 0}
    theirs = iter([(i, r) for i, r in enumerate(ranges) if i not in mine])
    with ProcessPoolExecutor(workers - 1, mp_context=ctx) as ex:
        pending = {}

        def submit():
            nxt = next(theirs, None)
            if nxt is not None:
                i, (a, b) = nxt
                pending[i] = ex.submit(_format_range, directory, a, b, array)

        for _ in range(2 * (workers - 1)):
            submit()
        for i, (a, b) in enumerate(ranges):
            if i in mine:
                yield _format_range(directory, a, b, array)
            else:
                result = pending.pop(i).result()
                submit()
                yield result


def _export_window(store, w, start: int, since, until, progress) -> int:
    """The whole store's events recorded in [since, until], through the
    store's own time filter (a merged store's times need not follow its
    positions, so the window is not one range of positions)."""
    progress.begin("export", total_events=max(store.head() - start + 1, 0))
    try:
        buf = []
        for ev in store.read_all(from_position=start, since=since, until=until):
            buf.append(_dumps(ev.to_dict()))
            if len(buf) >= 1024:
                w.lines(buf)
                progress.advance(events=len(buf))
                buf = []
        w.lines(buf)
        progress.advance(events=len(buf))
        w.close()
    finally:
        progress.end()
    return w.count


def _positions_from(events, from_position: int):
    for ev in events:
        if ev.position >= from_position:
            yield ev


def iter_events(store, streams, from_position: int = 1, since=None, until=None):
    """RecordedEvents in position order (for ``--format table``)."""
    if streams:
        its = [_positions_from(store.read(s, since=since, until=until), from_position)
               for s in dict.fromkeys(streams)]
        return heapq.merge(*its, key=lambda e: e.position)
    return store.read_all(from_position=max(from_position, 1), since=since, until=until)


def import_events(store, source, **kw):
    from .importer import import_events as run

    return run(store, source, **kw)
