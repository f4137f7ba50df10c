"""The file backend's NDJSON fast paths (:meth:`Backend.ndjson_chunks`,
:meth:`Backend.ndjson_stream`).

The commit log holds each batch as one msgpack list -- stream, first
version, first position, commit time, then id, type, data, metadata of each
event -- which is what :func:`evstore.core.lines.chunk_text` formats.  So a
range of positions is printed straight from the decoded frames, without a
RecordedEvent per event, and a large range by several processes at once
(each formatting its own slice of positions; the slices are written in
order).  A damaged frame is CorruptStore, as for any reader.

A stream is read from its stream log, a frame per event; but the events of
one big batch are also one run of the commit log, which formats them far
faster, so a stream read switches to the commit log for the rest of any
batch it finds itself inside (:func:`stream_chunks`).
"""
from __future__ import annotations

import os


from ...core.lines import Stamps, chunk_text, event_text
from ...disk.bigframe import BigPayload, LazyBatch
from ...disk.commitlog import CommitLog
from ...disk.records import decode_batch_head
from ...errors import CorruptStore
from ...model import unpack
from .names import LOG_DIR

#: Ranges of at least this many events are formatted by worker processes
#: (one per CPU), each taking TASK_EVENTS positions at a time.  A task's
#: text is held whole by the worker and, while in flight, by the parent
#: (~2.3 MB for 10,000 events of ~230 bytes): small tasks keep memory flat;
#: each process keeps its commit log open from task to task, so a huge
#: batch is checked once per process and skipped into from the marks it
#: left (not from the batch's start for every task).
PARALLEL_EVENTS = 150_000
TASK_EVENTS = 10_000


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
        yield from _range_pieces(directory, lo, hi)
    else:
        yield from _parallel(directory, lo, hi, n, ctx)


def _raw(payload):
    if isinstance(payload, BigPayload):
        return payload
    return unpack(payload)


def _log_payloads(directory: str, start: int, head: int, log: CommitLog | None = None):
    """Decoded commit-log payloads holding positions ``start``..``head``
    (a committed head: a batch boundary).  A huge batch comes 1024 events
    at a time (each piece a batch of its own), never whole.  ``log``: an
    open commit log to use (and leave open), else one is opened here."""
    own = log is None
    if own:
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
        if own:
            log.close()


def _range_pieces(directory: str, start: int, end: int, caches=None, log=None):
    """(bytes, count) pieces of the NDJSON lines of positions start..end,
    ~1024 events at a time; an error (a damaged frame) comes after the
    lines of the batches before it, as :meth:`FileBackend.read_all` would
    have given them.  ``caches``: the (stamps, types, heads) of
    :func:`chunk_text` to go on with;
    ``log``: an open commit log to read (see :func:`_log_payloads`)."""
    stamps, types, heads = caches or (Stamps(), {}, {})
    chunk: list = []
    try:
        yield from _chunked(_log_payloads(directory, start, end, log), start, end, chunk,
                            stamps, types, heads)
    except Exception:
        # damage met mid-way: the batches read before it come first
        if chunk:
            yield _piece(chunk, stamps, types, heads)
        raise
    if chunk:
        yield _piece(chunk, stamps, types, heads)


def _piece(chunk, stamps, types, heads):
    return chunk_text(chunk, stamps, types, heads).encode("utf-8"), \
        sum((len(b) - 4) >> 2 for b in chunk)


def _chunked(payloads, start, end, chunk, stamps, types, heads):
    """_range_pieces' loop: ``chunk`` holds the batches not yet yielded."""
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
            piece = _piece(chunk, stamps, types, heads)
            chunk.clear()
            size = 0
            yield piece


#: The commit log a worker process keeps open across its tasks (see TASK_EVENTS).
_WORKER_LOG: dict = {}


def _format_range(directory: str, start: int, end: int):
    """Worker: the NDJSON text of positions start..end, and the count."""
    log = _WORKER_LOG.get(directory)
    if log is None:
        for old in _WORKER_LOG.values():
            old.close()
        _WORKER_LOG.clear()
        log = _WORKER_LOG[directory] = CommitLog(os.path.join(directory, LOG_DIR))
    parts, count = [], 0
    for data, k in _range_pieces(directory, start, end, log=log):
        count += k
        parts.append(data)
    return b"".join(parts), count


def _parallel(directory, start, head, workers, ctx):
    """Ranges of TASK_EVENTS positions formatted by ``workers`` processes --
    this one included: it formats every ``workers``-th range itself, a
    chunk at a time, rather than wait -- yielded in position order, with
    at most two ranges per worker process in flight."""
    from concurrent.futures import ProcessPoolExecutor

    ranges = [(a, min(a + TASK_EVENTS - 1, head)) for a in range(start, head + 1, TASK_EVENTS)]
    mine = {i for i in range(len(ranges)) if i % workers == 0}
    theirs = iter([(i, r) for i, r in enumerate(ranges) if i not in mine])
    log = CommitLog(os.path.join(directory, LOG_DIR))
    caches = Stamps(), {}, {}
    try:
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
                    yield from _range_pieces(directory, a, b, caches, log)
                else:
                    result = pending.pop(i).result()
                    submit()
                    yield result
    finally:
        log.close()


#: A stream read switches to the commit log after this many events of one
#: batch in a row (the commit log formats a batch's events without a frame
#: and an object each); a stream of small batches never pays for the look-up.
RUN = 16


def stream_chunks(directory: str, records, log: CommitLog, stream: str, lo: int, hi: int):
    """(bytes, count) pieces of the NDJSON lines of ``stream``'s versions
    lo..hi (both readable, hi at most the stream's committed tail).

    ``records(a, b)`` gives the RecordedEvents of versions a..b from the
    stream log (with its fall-back to the commit-log copy of a damaged
    record).  Once RUN events in a row share a batch, the rest of that batch
    (up to hi) is formatted from the commit log, and the stream log is taken
    up again after it.  Should the commit-log copy fail (damage, or a
    segment compaction replaced), the stream log gives the events from the
    first one not printed, and no more
    batches are taken from the commit log: the bytes are those of the
    stream log's events either way."""
    caches = Stamps(), {}, {}
    v, jumps = lo, True
    while v <= hi:
        buf: list = []
        jump, run, prev = None, 0, None
        try:
            for ev in records(v, hi):
                if prev is not None and ev.recorded_at is prev.recorded_at \
                        and ev.position == prev.position + 1:
                    run += 1
                else:
                    run = 1
                buf.append(ev)
                prev = ev
                if run == RUN and jumps and ev.version < hi:
                    jump = _batch_rest(log, stream, ev, hi)
                    if jump is not None:
                        break
                if len(buf) >= 1024:
                    yield event_text(buf, *caches).encode("utf-8"), len(buf)
                    buf = []
        except Exception:
            if buf:  # the events read before the damage come first
                yield event_text(buf, *caches).encode("utf-8"), len(buf)
            raise
        if buf:
            yield event_text(buf, *caches).encode("utf-8"), len(buf)
        if jump is None:
            return
        v = prev.version + 1
        try:
            for data, k in _range_pieces(directory, jump[0], jump[1], caches):
                yield data, k
                v += k
        except (CorruptStore, OSError):
            # damage, or a file compaction replaced under this read: the
            # stream log (with its own checks) from the first event not printed
            jumps = False


def _batch_rest(log: CommitLog, stream: str, ev, hi: int):
    """(first, last) positions of the events of ``ev``'s batch after it, up
    to version ``hi``; None when the commit log does not hold that batch
    where expected (then the stream log goes on alone)."""
    try:
        s, fv, fp, us, n = log.head_of_batch(ev.position)
    except (ValueError, LookupError, OSError, CorruptStore):
        return None
    if s != stream or not fv <= ev.version < fv + n or ev.position - fp != ev.version - fv:
        return None
    last_v = min(fv + n - 1, hi)
    if last_v <= ev.version:
        return None
    return ev.position + 1, ev.position + (last_v - ev.version)

