"""Import, pass 1 (checking): parse every input line, validate it and pack it
exactly as the store will hold it, into spool files -- in worker processes
over byte ranges for a large file.

Nothing here opens a store: bad input is refused before anything is written.
importer.py stitches the chunks together and holds the result.
"""
from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field

import msgpack

from ..errors import InvalidEvent
from ..model import canonical_id, check_json_value, check_stream_id, datetime_to_us, parse_timestamp
from .progress import NO_PROGRESS


#: Events per batch at most (longer runs of one original batch are split).
MAX_GROUP = 10_000


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


#: Positions with gaps: most likely an export of some streams, which only
#: a renumbering import can take.

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


def _check_lines(lines, spool: str, max_bytes: int, progress=NO_PROGRESS,
                 renumber: bool = False) -> _Chunk:
    """Pass 1 over an iterable of raw lines (bytes): validate, pack, spool.
    The first line refused ends the pass (``error``: its line and why).

    ``renumber``: positions are not kept, so they need not be dense (nor
    present), and times only have to keep their order within each stream
    (a merge of two exports goes back in time where the second begins)."""
    c = _Chunk(spool)
    out = open(spool, "wb")
    event = _EventCheck(max_bytes, renumber)
    order = _Order(c.streams, renumber)
    groups = _Groups(out.write)
    check_event, check_order, add = event.check, order.check, groups.add  # per line: bound once
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
                groups.stream = None  # a group's events are on consecutive lines
                continue
            try:
                stream, v, p, us, blob = check_event(raw)
                p = check_order(n, stream, v, p, us)
            except _Refused as e:
                c.error = (n, str(e))
                break
            if c.events == 0:
                c.first_p, c.first_us, c.first_line = p, us, n
            c.events += 1
            add(stream, v, p, us, blob, n)
        if c.error is None:
            groups.flush()
        c.groups = groups.written
        c.lines = n
        c.last_p, c.last_us = order.prev_p or 0, order.prev_us or 0
        progress.advance(events=n - pending_lines, nbytes=pending_bytes)
    finally:
        out.close()
    c.nbytes = os.path.getsize(spool)
    return c


class _Refused(Exception):
    """A line import refuses; the message says why (the caller adds the line)."""


class _EventCheck:
    """One line's event parsed, validated and packed exactly as the store
    will hold it.  Kept between lines: the stream ids already checked and
    the last ``recorded_at`` parsed (runs of a batch share it), because
    this runs once per event of the input."""

    __slots__ = ("max_bytes", "renumber", "pack", "valid_ids", "ts_text", "ts_us")

    def __init__(self, max_bytes: int, renumber: bool):
        self.max_bytes, self.renumber = max_bytes, renumber
        self.pack = msgpack.Packer().pack  # as model.pack_fields packs an event
        self.valid_ids: set = set()
        self.ts_text, self.ts_us = None, 0

    def check(self, raw: bytes):
        """``(stream, version, position, recorded_at in µs, packed event)``
        of a line; _Refused naming what is wrong."""
        try:
            obj = _decode(raw.decode("utf-8"))
            if type(obj) is not dict:
                raise ValueError("expected a JSON object (a recorded event)")
            stream = obj["stream"]
            v = obj["version"]
            p = obj.get("position", 1) if self.renumber else obj["position"]
            eid = obj["id"]
            etype = obj["type"]
            ts = obj["recorded_at"]
        except KeyError as e:
            raise _Refused(f"missing {e.args[0]!r} (import reads recorded events, "
                           "as 'evstore export' writes them)") from None
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise _Refused(f"invalid JSON ({e})") from None
        try:
            if stream not in self.valid_ids:
                check_stream_id(stream)
                self.valid_ids.add(stream)
            if type(v) is not int or v < 1 or type(p) is not int or p < 1:
                raise InvalidEvent("version and position must be whole numbers >= 1")
            if type(etype) is not str or not etype:
                raise InvalidEvent('"type" must be a non-empty string')
            if type(eid) is not str or not _UUID(eid):
                eid = canonical_id(eid)
            if ts != self.ts_text:
                self._parse_time(ts)
            data = obj["data"] if "data" in obj else {}
            meta = obj["metadata"] if "metadata" in obj else {}
            try:
                blob = self.pack([eid, etype, data, meta])[1:]
            except (OverflowError, ValueError, TypeError):
                _name_the_value(data, meta)
                raise InvalidEvent("cannot be stored (a value msgpack refuses)") from None
            if _INF[0] in blob or _INF[1] in blob:
                _name_the_value(data, meta)
            if len(blob) > self.max_bytes:
                raise InvalidEvent(f"{len(blob)} bytes, over the size limit of "
                                   f"{self.max_bytes} bytes")
        except Exception as e:  # noqa: BLE001 - InvalidEvent, InvalidStreamId: one line's fault
            raise _Refused(str(e)) from None
        return stream, v, p, self.ts_us, blob

    def _parse_time(self, ts) -> None:
        if type(ts) is not str:
            raise InvalidEvent('"recorded_at" must be an RFC 3339 string')
        try:
            self.ts_us = datetime_to_us(parse_timestamp(ts))
        except ValueError as e:
            raise InvalidEvent(f"recorded_at: {e}") from None
        self.ts_text = ts



def _name_the_value(data, meta) -> None:
    """InvalidEvent naming a value JSON cannot hold (an integer outside 64
    bits, an infinite float), found only once packing failed or left an
    infinity's bytes: checking every value of every event would be slow."""
    check_json_value(data, "data")
    check_json_value(meta, "metadata")


class _Order:
    """The order rules between lines: positions increase and time does not
    go back across the input (unless renumbering, which keeps neither), and
    each stream's versions continue and its time does not go back.
    ``streams``: stream -> [first version, last version, line of the first,
    first time, last time] (the chunk's, which importer.py stitches)."""

    __slots__ = ("streams", "renumber", "prev_p", "prev_us")

    def __init__(self, streams: dict, renumber: bool):
        self.streams, self.renumber = streams, renumber
        self.prev_p = self.prev_us = None

    def check(self, n: int, stream: str, v: int, p: int, us: int) -> int:
        """Take line ``n``'s event; returns the position to keep (0 when
        renumbering); _Refused when it is out of order."""
        prev_p, prev_us = self.prev_p, self.prev_us
        if self.renumber:
            p = 0
        else:
            if prev_p is not None and p <= prev_p:
                raise _Refused(f"position {p} does not follow position {prev_p} on the line "
                               "before")
            if prev_us is not None and us < prev_us:
                raise _Refused("recorded_at is earlier than on the line before")
        s = self.streams.get(stream)
        if s is None:
            self.streams[stream] = [v, v, n, us, us]
        elif v != s[1] + 1:
            raise _Refused(f"stream {stream!r}: version {v} does not follow version {s[1]}")
        elif us < s[4]:
            raise _Refused(f"stream {stream!r}: recorded_at is earlier than at version {s[1]}")
        else:
            s[1] = v
            s[4] = us
        self.prev_p, self.prev_us = p, us
        return p


class _Groups:
    """Consecutive events of one stream with one time (one original batch,
    at most MAX_GROUP events and 32 MiB) written to the spool as one group:
    ``[stream, first version, first position, time, blobs, first line]``."""

    __slots__ = ("write", "packb", "stream", "fv", "fp", "us", "line", "blobs", "size",
                 "written")

    def __init__(self, write):
        self.write = write
        self.packb = msgpack.Packer(use_bin_type=True).pack
        self.stream = None  # None: the next event starts a group
        self.fv = self.fp = self.us = self.line = self.size = 0
        self.blobs: list = []
        self.written = 0

    def add(self, stream: str, v: int, p: int, us: int, blob: bytes, n: int) -> None:
        blobs = self.blobs
        if (self.stream == stream and self.us == us and len(blobs) < MAX_GROUP
                and self.size < 32 << 20):
            blobs.append(blob)
            self.size += len(blob)
            return
        self.flush()
        self.stream, self.fv, self.fp, self.us, self.line = stream, v, p, us, n
        self.blobs, self.size = [blob], len(blob)

    def flush(self) -> None:
        if self.blobs:
            self.write(self.packb([self.stream, self.fv, self.fp, self.us, self.blobs,
                                   self.line]))
            self.written += 1


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


def _check_range(path, start, end, spool, max_bytes, renumber=False) -> _Chunk:
    return _check_lines(_range_lines(path, start, end), spool, max_bytes, renumber=renumber)


def _quiet_worker() -> None:
    """Worker processes leave Ctrl-C to the parent (a terminal sends it to
    every process of the group): the parent stops them and reports once."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def _check_parallel(path, cuts, spools, max_bytes, workers, progress,
                    renumber=False) -> list[_Chunk]:
    from ..backends.files.procs import mp_context

    ctx = mp_context() if workers > 1 else None
    if ctx is None or len(spools) == 1:
        out = []
        for i, s in enumerate(spools):
            c = _check_lines(_range_lines(path, cuts[i], cuts[i + 1]), s, max_bytes, progress,
                             renumber)
            out.append(c)
            if c.error:
                break
        return out
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_quiet_worker)
    try:
        futs = [ex.submit(_check_range, path, cuts[i], cuts[i + 1], s, max_bytes, renumber)
                for i, s in enumerate(spools)]
        out = []
        for i, f in enumerate(futs):
            out.append(f.result())
            progress.advance(events=out[-1].lines, nbytes=cuts[i + 1] - cuts[i])
        return out
    except BaseException:
        # interrupted (or a worker failed): stop the workers now rather
        # than wait for every range to be checked
        for p in list((getattr(ex, "_processes", None) or {}).values()):
            p.terminate()
        ex.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        ex.shutdown(wait=True)
