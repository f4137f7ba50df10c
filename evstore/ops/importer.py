"""``import``: recorded events (``evstore export`` output) into a store.

Two passes, so that bad input is refused with nothing written:

1. *Check*: every line is parsed, validated (SPEC §2, the size limit, ids,
   times) and packed exactly as the store will hold it, and the events must
   continue each other: positions dense, each stream's versions contiguous,
   ``recorded_at`` never going back.  The packed events go to a spool file
   (``STORE/.tmp-import-*``; verify calls one left by a crash harmless and
   repair moves it aside).  A large input file is checked by several
   processes at once, each over a byte range; they report what they saw at
   their edges and this process stitches the ranges together.  A pipe is
   spooled the same way, so it is refused as atomically as a file.
2. *Write*: after checking that the input continues the store (its first
   position is the next one, each stream's first version is that stream's
   next one, times do not go back), the spool is written under one hold of
   the writer lock: runs of lines with the same stream and ``recorded_at``
   (the original batches) become batches again, and the commit log is
   fsynced once per ``batch_size`` events (never with ``sync=False``).  The
   stream logs are synced and ``sync-state`` advanced at the end, as the
   core does when a store closes.

An import that crashes in pass 2 leaves a valid store holding a prefix of
the input; ``evstore export --from-position`` on the source continues it.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass, field

import msgpack

from ..errors import InvalidEvent
from ..disk.records import (DEFAULT_MAX_EVENT_BYTES, NewEvent, canonical_id, check_json_value,
                       check_stream_id, datetime_to_us, parse_timestamp)
from .progress import NO_PROGRESS

#: Events per batch at most (longer runs of one original batch are split).
MAX_GROUP = 10_000
#: Inputs at least this large are checked by worker processes.
PARALLEL_BYTES = 16 << 20


@dataclass
class ImportResult:
    events: int = 0
    batches: int = 0
    streams: int = 0
    first_position: int | None = None
    last_position: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"events": self.events, "batches": self.batches, "streams": self.streams,
                "first_position": self.first_position, "last_position": self.last_position,
                "seconds": round(self.seconds, 3)}


@dataclass
class _Chunk:
    """What checking one part of the input found."""

    spool: str
    lines: int = 0
    events: int = 0
    groups: int = 0
    first_p: int = 0
    last_p: int = 0
    first_us: int = 0
    last_us: int = 0
    first_line: int = 0
    #: stream -> [first version, last version, line of the first]
    streams: dict = field(default_factory=dict)
    error: tuple | None = None  # (line within the chunk, message)
    nbytes: int = 0


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z").match


def _reject(name):
    raise ValueError(f"{name} is not allowed in JSON")


_raw_decode = json.JSONDecoder(parse_constant=_reject).raw_decode

#: The strict parse (jsonio) rejects integers outside 64 bits and numbers
#: that overflow a float; the C parser used here accepts both.  Packing the
#: event finds the first (msgpack refuses such integers); an infinite float
#: leaves its IEEE bytes in the packed event, and only then are the values
#: checked one by one (check_json_value).
_INF = (b"\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\xff\xf0\x00\x00\x00\x00\x00\x00")


def _decode(text: str):
    if text[:1].isspace():
        text = text.strip()
    obj, end = _raw_decode(text)
    if end != len(text) and not text[end:].isspace():
        raise ValueError(f"extra data after the JSON value at column {end + 1}")
    return obj


def _check_lines(lines, spool: str, max_bytes: int, progress=NO_PROGRESS) -> _Chunk:
    """Pass 1 over an iterable of raw lines (bytes): validate, pack, spool."""
    c = _Chunk(spool)
    out = open(spool, "wb")
    packb = msgpack.Packer(use_bin_type=True).pack
    pack = msgpack.Packer().pack  # as records.pack_fields packs an event
    write = out.write
    streams = c.streams
    valid_ids: set = set()
    ts_text, ts_us = None, 0
    g_stream = None
    g_blobs: list = []
    g_fv = g_fp = g_us = g_size = 0
    prev_p = prev_us = None
    n = 0
    pending_bytes = 0
    pending_lines = 0
    try:
        for raw in lines:
            n += 1
            pending_bytes += len(raw)
            if pending_bytes >= 1 << 20:
                progress.advance(events=n - pending_lines, nbytes=pending_bytes)
                pending_bytes, pending_lines = 0, n
            if not raw.strip():
                continue
            try:
                obj = _decode(raw.decode("utf-8"))
                if type(obj) is not dict:
                    raise ValueError("expected a JSON object (a recorded event)")
                stream = obj["stream"]
                v = obj["version"]
                p = obj["position"]
                eid = obj["id"]
                etype = obj["type"]
                ts = obj["recorded_at"]
            except KeyError as e:
                c.error = (n, f"missing {e.args[0]!r} (import reads recorded events, "
                              "as 'evstore export' writes them)")
                break
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                c.error = (n, f"invalid JSON ({e})")
                break
            try:
                if stream not in valid_ids:
                    check_stream_id(stream)
                    valid_ids.add(stream)
                if type(v) is not int or v < 1 or type(p) is not int or p < 1:
                    raise InvalidEvent("version and position must be whole numbers >= 1")
                if type(etype) is not str or not etype:
                    raise InvalidEvent('"type" must be a non-empty string')
                data = obj["data"] if "data" in obj else {}
                meta = obj["metadata"] if "metadata" in obj else {}
                if type(eid) is not str or not _UUID(eid):
                    eid = canonical_id(eid)
                if ts != ts_text:
                    if type(ts) is not str:
                        raise InvalidEvent('"recorded_at" must be an RFC 3339 string')
                    try:
                        ts_us = datetime_to_us(parse_timestamp(ts))
                    except ValueError as e:
                        raise InvalidEvent(f"recorded_at: {e}") from None
                    ts_text = ts
                try:
                    blob = pack([eid, etype, data, meta])[1:]
                except (OverflowError, ValueError, TypeError):
                    check_json_value(data, "data")  # names the value
                    check_json_value(meta, "metadata")
                    raise InvalidEvent("cannot be stored (a value msgpack refuses)") from None
                if _INF[0] in blob or _INF[1] in blob:
                    check_json_value(data, "data")
                    check_json_value(meta, "metadata")
                if len(blob) > max_bytes:
                    raise InvalidEvent(f"{len(blob)} bytes, over the size limit of "
                                       f"{max_bytes} bytes")
            except Exception as e:  # noqa: BLE001 - InvalidEvent, InvalidStreamId: one line's fault
                c.error = (n, str(e))
                break
            us = ts_us
            if prev_p is not None and p != prev_p + 1:
                c.error = (n, f"position {p} does not follow position {prev_p} on the line before")
                break
            if prev_us is not None and us < prev_us:
                c.error = (n, "recorded_at is earlier than on the line before")
                break
            s = streams.get(stream)
            if s is None:
                streams[stream] = [v, v, n]
            elif v != s[1] + 1:
                c.error = (n, f"stream {stream!r}: version {v} does not follow version {s[1]}")
                break
            else:
                s[1] = v
            if c.events == 0:
                c.first_p, c.first_us, c.first_line = p, us, n
            c.events += 1
            prev_p, prev_us = p, us
            if (g_stream == stream and g_us == us and len(g_blobs) < MAX_GROUP
                    and g_size < 32 << 20):
                g_blobs.append(blob)
                g_size += len(blob)
            else:
                if g_blobs:
                    write(packb([g_stream, g_fv, g_fp, g_us, g_blobs]))
                    c.groups += 1
                g_stream, g_fv, g_fp, g_us = stream, v, p, us
                g_blobs, g_size = [blob], len(blob)
        if g_blobs and c.error is None:
            write(packb([g_stream, g_fv, g_fp, g_us, g_blobs]))
            c.groups += 1
        c.lines = n
        c.last_p, c.last_us = prev_p or 0, prev_us or 0
        progress.advance(events=n - pending_lines, nbytes=pending_bytes)
    finally:
        out.close()
    c.nbytes = os.path.getsize(spool)
    return c


def _range_lines(path: str, start: int, end: int):
    """The lines that start in ``[start, end)`` of a file."""
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        for line in f:
            if pos >= end:
                return
            yield line
            pos += len(line)


def _check_range(path, start, end, spool, max_bytes) -> _Chunk:
    return _check_lines(_range_lines(path, start, end), spool, max_bytes)


def _boundaries(path: str, size: int, parts: int) -> list[int]:
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, parts):
            f.seek(size * i // parts)
            f.readline()
            pos = f.tell()
            if cuts[-1] < pos < size:
                cuts.append(pos)
    cuts.append(size)
    return cuts


def _is_array(head: bytes) -> bool:
    return head.lstrip().startswith(b"[")


def import_events(store, source, *, batch_size: int = 10_000, sync: bool = True,
                  progress=None, workers: int | None = None) -> ImportResult:
    """Read recorded events (NDJSON or one JSON array, binary ``source``)
    into ``store``, keeping ids, streams, versions, positions and times.

    Raises InvalidEvent, with nothing written, when any line is invalid or
    the input does not continue the store.
    """
    t0 = time.monotonic()
    progress = progress or NO_PROGRESS
    directory = store.directory
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    chunks: list[_Chunk] = []
    spools: list[str] = []
    max_bytes = getattr(store, "max_event_bytes", DEFAULT_MAX_EVENT_BYTES)
    try:
        path, size = _regular_file(source)
        progress.begin("check", total_bytes=size)
        try:
            if path is not None and not _is_array(_peek(path)):
                n = workers if workers is not None else (
                    (os.cpu_count() or 1) if size >= PARALLEL_BYTES else 1)
                cuts = _boundaries(path, size, max(n, 1) * 4 if n > 1 else 1)
                spools = [os.path.join(directory, f".tmp-import-{stamp}-{i}")
                          for i in range(len(cuts) - 1)]
                chunks = _check_parallel(path, cuts, spools, max_bytes, n, progress)
            else:
                spools = [os.path.join(directory, f".tmp-import-{stamp}-0")]
                chunks = [_check_lines(_source_lines(source), spools[0], max_bytes,
                                       progress)]
        finally:
            progress.end()
        plan = _stitch(store, chunks)
        result = _write(store, chunks, plan, batch_size, sync, progress)
        result.seconds = time.monotonic() - t0
        return result
    finally:
        for s in spools:
            try:
                os.unlink(s)
            except FileNotFoundError:
                pass


def _regular_file(source):
    """(path, size) when ``source`` is a regular file, read from its start,
    that can be opened again by name (for checking in parallel); (None,
    size) for other regular files; (None, None) for pipes."""
    try:
        st = os.fstat(source.fileno())
    except (AttributeError, OSError, ValueError):
        return None, None
    if not stat.S_ISREG(st.st_mode):
        return None, None
    name = getattr(source, "name", None)
    try:
        if isinstance(name, str) and source.tell() == 0:
            st2 = os.stat(name)
            if (st2.st_dev, st2.st_ino) == (st.st_dev, st.st_ino):
                return name, st.st_size
    except OSError:
        pass
    return None, st.st_size


def _peek(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4096)


def _source_lines(source):
    """Raw lines of the input; a JSON array is turned into lines."""
    from ..features.jsonio import dumps

    if hasattr(source, "peek"):
        head = source.peek(4096)[:4096]
    else:
        head = b""
    if _is_array(head):
        from ..features.jsonio import iter_documents

        for _label, obj in iter_documents(source):
            yield dumps(obj).encode("utf-8")
        return
    yield from source


def _check_parallel(path, cuts, spools, max_bytes, workers, progress) -> list[_Chunk]:
    from .checks import mp_context

    ctx = mp_context() if workers > 1 else None
    if ctx is None or len(spools) == 1:
        out = []
        for i, s in enumerate(spools):
            c = _check_lines(_range_lines(path, cuts[i], cuts[i + 1]), s, max_bytes, progress)
            out.append(c)
            if c.error:
                break
        return out
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
        futs = [ex.submit(_check_range, path, cuts[i], cuts[i + 1], s, max_bytes)
                for i, s in enumerate(spools)]
        out = []
        for i, f in enumerate(futs):
            out.append(f.result())
            progress.advance(events=out[-1].lines, nbytes=cuts[i + 1] - cuts[i])
        return out


@dataclass
class _Plan:
    first_p: int | None = None
    last_p: int | None = None
    streams: int = 0
    events: int = 0


def _stitch(store, chunks: list[_Chunk]) -> _Plan:
    """Check that the chunks continue each other and the store; raise
    InvalidEvent naming the first offending line."""
    from ..disk.commitlog import CommitLog
    from ..core.store import LOG_DIR

    log = CommitLog(os.path.join(store.directory, LOG_DIR))
    try:
        t = log.refresh()
        head, last_us = t.head, t.last_recorded_us
    finally:
        log.close()
    plan = _Plan()
    expected = head + 1
    versions: dict = {}
    base = 0
    for c in chunks:
        errors = []
        if c.error:
            errors.append(c.error)
        if c.events:
            if c.first_p != expected:
                what = ("the store's next position" if expected == head + 1 and plan.events == 0
                        else "the position after the line before")
                errors.append((c.first_line, f"position {c.first_p} is not {what} ({expected})"))
            if c.first_us < last_us:
                errors.append((c.first_line, "recorded_at is earlier than the store's last commit"
                               if plan.events == 0 else "recorded_at is earlier than on the line before"))
            for stream, (fv, lv, line) in c.streams.items():
                prev = versions.get(stream)
                if prev is None:
                    prev = store.version(stream) if head else 0
                if fv != prev + 1:
                    errors.append((line, f"stream {stream!r}: version {fv} does not continue "
                                   f"version {prev}" + (" (the store's)" if stream not in versions else "")))
                versions[stream] = lv
        if errors:
            line, msg = min(errors)
            raise InvalidEvent(f"line {base + line}: {msg}; nothing was imported")
        if c.events:
            if plan.first_p is None:
                plan.first_p = c.first_p
            plan.last_p = c.last_p
            plan.events += c.events
            expected = c.last_p + 1
            last_us = c.last_us
        base += c.lines
    plan.streams = len(versions)
    return plan


def _write(store, chunks, plan: _Plan, batch_size: int, sync: bool, progress) -> ImportResult:
    result = ImportResult(streams=plan.streams, first_position=plan.first_p,
                          last_position=plan.last_p)
    if not plan.events:
        return result
    progress.begin("import", total_events=plan.events)
    try:
        with _BatchWriter(store, plan.first_p, sync, batch_size) as w:
            pend = None

            def flush(g):
                w.write(*g)
                result.events += len(g[4])
                result.batches += 1
                progress.advance(events=len(g[4]))

            for c in chunks:
                with open(c.spool, "rb") as f:
                    for g in msgpack.Unpacker(f, raw=False, use_list=True,
                                              max_buffer_size=1 << 31):
                        # a batch that a chunk boundary split in two is one again
                        if (pend is not None and g[0] == pend[0] and g[3] == pend[3]
                                and g[2] == pend[2] + len(pend[4])
                                and len(pend[4]) + len(g[4]) <= MAX_GROUP):
                            pend[4].extend(g[4])
                            continue
                        if pend is not None:
                            flush(pend)
                        pend = g
            if pend is not None:
                flush(pend)
    finally:
        progress.end()
    return result


class _BatchWriter:
    """Writes checked batches through the store's bulk writer, under one hold
    of the writer lock, with one fsync of the commit log per ``batch_size``
    events (or none with ``--no-sync``).  See docs/OPERATIONS.md, "Import"."""

    def __init__(self, store, first_p: int, sync: bool, batch_size: int):
        self.store = store
        self.first_p = first_p
        self.sync = sync
        self.batch_size = batch_size

    def __enter__(self):
        self._cm = self.store.bulk_writer()
        self.bulk = self._cm.__enter__()
        if self.bulk.head + 1 != self.first_p:
            head = self.bulk.head
            self._cm.__exit__(None, None, None)
            raise InvalidEvent(f"the store's last position is now {head}: another "
                               "writer appended while the input was being checked; nothing was "
                               "imported")
        return self

    def write(self, stream, fv, fp, us, blobs) -> None:
        self.bulk.write(stream, fv, fp, us, blobs)
        if self.sync and self.bulk.unsynced >= self.batch_size:
            self.bulk.sync()

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self.sync:
                self.bulk.finish()
        finally:
            self._cm.__exit__(exc_type, exc, tb)
        return False


def _unpack_event(blob: bytes) -> NewEvent:
    eid, etype, data, meta = msgpack.unpackb(b"\x94" + blob, raw=False, strict_map_key=False)
    return NewEvent(etype, data, meta, eid)
