"""The file backend's NDJSON fast path (:meth:`Backend.ndjson_chunks`).

The commit log holds each batch as one msgpack list -- stream, first
version, first position, commit time, then id, type, data, metadata of each
event -- which is what :func:`evstore.core.lines.chunk_lines` formats.  So a
range of positions is printed straight from the decoded frames, without a
RecordedEvent per event, and a large range by several processes at once
(each formatting its own slice of positions; the slices are written in
order).  A damaged frame is CorruptStore, as for any reader.
"""
from __future__ import annotations

import os


from ...core.lines import Stamps, chunk_lines
from ...disk.bigframe import BigPayload, LazyBatch
from ...disk.commitlog import CommitLog
from ...disk.records import decode_batch_head, unpack
from .names import LOG_DIR

#: Ranges of at least this many events are formatted by worker processes
#: (one per CPU), each taking TASK_EVENTS positions at a time.
PARALLEL_EVENTS = 150_000
TASK_EVENTS = 50_000


def chunks(directory: str, lo: int, hi: int, workers: int | None = None):
    """(bytes, count) pieces of the NDJSON lines of positions lo..hi (hi a
    committed head), in position order.  ``workers``: processes in all
    (None: one per CPU when the range is large; 1: this one alone)."""
    total = max(hi - lo + 1, 0)
    n = workers if workers is not None else (
        (os.cpu_count() or 1) if total >= PARALLEL_EVENTS else 1)
    ctx = None
    if n > 1 and total > TASK_EVENTS:
        from .procs import mp_context

        ctx = mp_context()
    if ctx is None:
        for lines in _range_lines(directory, lo, hi):
            yield ("\n".join(lines) + "\n").encode("utf-8"), len(lines)
    else:
        yield from _parallel(directory, lo, hi, n, ctx)


def _raw(payload):
    if isinstance(payload, BigPayload):
        return payload
    return unpack(payload)


def _log_payloads(directory: str, start: int, head: int):
    """Decoded commit-log payloads holding positions ``start``..``head``
    (a committed head: a batch boundary).  A huge batch comes 1024 events
    at a time (each piece a batch of its own), never whole."""
    log = CommitLog(os.path.join(directory, LOG_DIR))
    try:
        t = log.refresh()
        if start > head or head > t.head:
            return
        for x in log.decoded_from(start, _raw):
            if isinstance(x, BigPayload):
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
            if x[2] > head:
                return
            if x[0] == "":
                continue  # a gap frame: positions compaction removed
            yield x
    finally:
        log.close()


def _range_lines(directory: str, start: int, end: int):
    """Lists of NDJSON lines for positions start..end, a chunk at a time;
    an error (a damaged frame) comes after the lines of the batches before
    it, as :meth:`FileBackend.read_all` would have given them."""
    stamps, types, heads = Stamps(), {}, {}
    chunk: list = []
    try:
        yield from _chunked(_log_payloads(directory, start, end), start, end, chunk,
                            stamps, types, heads)
    except Exception:
        # damage met mid-way: the batches read before it come first
        if chunk:
            yield chunk_lines(chunk, stamps, types, heads)
        raise
    if chunk:
        yield chunk_lines(chunk, stamps, types, heads)


def _chunked(payloads, start, end, chunk, stamps, types, heads):
    """_range_lines' loop: ``chunk`` holds the batches not yet yielded."""
    size = 0
    for b in payloads:
        fp, n = b[2], (len(b) - 4) // 4
        if fp < start:  # a batch that begins before start
            b = b[:4] + b[4 + 4 * (start - fp):]
            b[1] += start - fp
            b[2] = fp = start
            n = (len(b) - 4) // 4
        if fp + n - 1 > end:  # ... or ends after end (a range a worker was given)
            b = b[:4 + 4 * (end - fp + 1)]
            n = end - fp + 1
        chunk.append(b)
        size += n
        if size >= 1024:
            lines = chunk_lines(chunk, stamps, types, heads)
            chunk.clear()
            size = 0
            yield lines


def _format_range(directory: str, start: int, end: int):
    """Worker: the NDJSON text of positions start..end, and the count."""
    parts, count = [], 0
    for lines in _range_lines(directory, start, end):
        count += len(lines)
        parts.append("\n".join(lines) + "\n")
    return "".join(parts).encode("utf-8"), count


def _parallel(directory, start, head, workers, ctx):
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
                pending[i] = ex.submit(_format_range, directory, a, b)

        for _ in range(2 * (workers - 1)):
            submit()
        for i, (a, b) in enumerate(ranges):
            if i in mine:
                yield _format_range(directory, a, b)
            else:
                result = pending.pop(i).result()
                submit()
                yield result
