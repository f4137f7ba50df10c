"""``import``: recorded events (``evstore export`` output) into a store.

Two passes, so that bad input is refused with nothing written:

1. *Check*: every line is parsed, validated (SPEC §2, the size limit, ids,
   times) and packed exactly as the store will hold it, and the events must
   continue each other: positions increasing (a gap is events removed where
   the input comes from, and stays a gap), each stream's versions contiguous,
   ``recorded_at`` never going back.  The packed events go to a spool file
   (``STORE/.tmp-import-*``; verify calls one left by a crash harmless and
   repair moves it aside; for a store that does not exist yet, beside it:
   no store is opened or created in this pass).  A large input file is checked by several
   processes at once, each over a byte range; they report what they saw at
   their edges and this process stitches the ranges together.  A pipe is
   spooled the same way, so it is refused as atomically as a file.
2. *Write*: after checking, under the writer lock, that the input
   continues the store (its first position is the next one -- or its
   leading events are the store's own, which are skipped: a rerun resumes
   -- each stream's first version is that stream's next one, times do not
   go back), the spool is written under that one hold of the lock: runs of lines with the same stream and ``recorded_at``
   (the original batches) become batches again, and the commit log is
   fsynced once per ``batch_size`` events (never with ``sync=False``).  The
   stream logs are synced and ``sync-state`` advanced at the end, as the
   core does when a store closes.

An import that crashes in pass 2 leaves a valid store holding a prefix of
the input; the same import run again skips that prefix and goes on.

``renumber`` (``import --renumber``, merging stores) keeps each event's
stream, version, id and time but gives it the store's next position: per
stream, events the store already holds are skipped, and the rest must
continue the stream (else ImportConflict, exit 3).  Import never removes a
store, even one it created: a refused import leaves what it found.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass, field

import msgpack

from ..errors import ImportConflict, InvalidEvent
from ..model import (DEFAULT_MAX_EVENT_BYTES, NewEvent, canonical_id, check_json_value,
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
    #: events of the input the store already held (a resumed or repeated import)
    skipped: int = 0
    #: events in the input
    total: int = 0
    #: stopped early (``stop()``): events and last_position say how far it got
    interrupted: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict:
        d = {"events": self.events, "batches": self.batches, "streams": self.streams,
             "first_position": self.first_position, "last_position": self.last_position,
             "seconds": round(self.seconds, 3), "skipped": self.skipped}
        if self.dry_run:
            d["dry_run"] = True
        return d


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

    ``renumber``: positions are not kept, so they need not be dense (nor
    present), and times only have to keep their order within each stream
    (a merge of two exports goes back in time where the second begins)."""
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
    g_fv = g_fp = g_us = g_size = g_line = 0
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
                g_stream = None  # a group's events are on consecutive lines
                continue
            try:
                obj = _decode(raw.decode("utf-8"))
                if type(obj) is not dict:
                    raise ValueError("expected a JSON object (a recorded event)")
                stream = obj["stream"]
                v = obj["version"]
                p = obj.get("position", 1) if renumber else obj["position"]
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
            if renumber:
                p = 0
            elif prev_p is not None and p <= prev_p:
                c.error = (n, f"position {p} does not follow position {prev_p} on the line "
                              "before")
                break
            if prev_us is not None and us < prev_us and not renumber:
                c.error = (n, "recorded_at is earlier than on the line before")
                break
            s = streams.get(stream)
            if s is None:
                streams[stream] = [v, v, n, us, us]
            elif v != s[1] + 1:
                c.error = (n, f"stream {stream!r}: version {v} does not follow version {s[1]}")
                break
            elif us < s[4]:
                c.error = (n, f"stream {stream!r}: recorded_at is earlier than at version {s[1]}")
                break
            else:
                s[1] = v
                s[4] = us
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
                    write(packb([g_stream, g_fv, g_fp, g_us, g_blobs, g_line]))
                    c.groups += 1
                g_stream, g_fv, g_fp, g_us, g_line = stream, v, p, us, n
                g_blobs, g_size = [blob], len(blob)
        if g_blobs and c.error is None:
            write(packb([g_stream, g_fv, g_fp, g_us, g_blobs, g_line]))
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


class CheckedInput:
    """Pass 1's result: the whole input checked and packed into spool files,
    before any store is opened, created or locked.  :meth:`plan` checks it
    against a store (read-only, for ``--dry-run``); :meth:`write` writes it
    under the writer lock.  ``close()`` removes the spool files."""

    def __init__(self, chunks: list, spools: list, renumber: bool):
        self.chunks = chunks
        self.spools = spools
        self.renumber = renumber
        self.events = sum(c.events for c in chunks)
        self.first_p = chunks[0].first_p if self.events else None
        self.last_p = chunks[-1].last_p if self.events else None
        #: stream -> (its first version in the input, that event's line)
        self.firsts: dict = {}
        self.first_line = 0
        self.first_us = 0

    def close(self) -> None:
        for s in self.spools:
            try:
                os.unlink(s)
            except FileNotFoundError:
                pass
        self.spools = []

    def __enter__(self) -> "CheckedInput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def groups(self):
        """The spooled runs of events as [stream, first version, first
        position, recorded_us, blobs, line of the first] -- the batches to
        write; a run that a chunk boundary split in two is one again."""
        pend = None
        base = 0
        for c in self.chunks:
            with open(c.spool, "rb") as f:
                for g in msgpack.Unpacker(f, raw=False, use_list=True, max_buffer_size=1 << 31):
                    g[5] += base
                    n = len(pend[4]) if pend is not None else 0
                    if (pend is not None and g[0] == pend[0] and g[3] == pend[3]
                            and g[1] == pend[1] + n and g[5] == pend[5] + n
                            and n + len(g[4]) <= MAX_GROUP):
                        pend[4].extend(g[4])
                        continue
                    if pend is not None:
                        yield pend
                    pend = g
            base += c.lines
        if pend is not None:
            yield pend

    # -- against a store ----------------------------------------------------------------
    def plan(self, store) -> "_Plan":
        """What writing this input into ``store`` would do (``None``: a store
        that does not exist yet), read-only.  Raises, with nothing written,
        InvalidEvent (exit 5) when the input does not continue the store and
        ImportConflict (exit 3) when a renumbered stream does not."""
        head, last_us = _store_tail(store)
        # gaps are judged for good under the lock, by the session that writes
        return self._plan(_ReadView(store), head, last_us, gaps=True)

    def _plan(self, view, head: int, last_us: int, gaps: bool = False) -> "_Plan":
        """``gaps``: the store records gaps (BulkSession.keeps_gaps), so an
        input may leave some before it, in positions and in a stream's
        versions (events removed where it comes from)."""
        if self.renumber:
            return self._plan_renumber(view, head)
        plan = _Plan(floors={})
        if not self.events:
            return plan
        p0 = self.first_p
        hint = ("; to merge into a store that already has events, use 'evstore import "
                "--renumber'" if head else "; to copy events that do not start at position 1 "
                "(an export of some streams), use 'evstore import --renumber'")
        # p0 > head + 1: the positions between were removed where the input
        # comes from (or it is an export of some streams); they stay gaps
        if p0 > head + 1 and not gaps:
            raise InvalidEvent(f"line {self.first_line}: position {p0} is not the store's next "
                               f"position ({head + 1}); nothing was imported{hint}")
        if p0 <= head:
            # a rerun of an import that stopped part-way: the input's leading
            # events must be the store's own, and are skipped
            top = min(head, self.last_p)
            for stream, fv, fp, _us, blobs, line in self.groups():
                if fp > top:
                    break
                k = min(len(blobs), top - fp + 1)
                bad = _compare(view.read_all(fp, fp + k - 1), stream, fv, blobs[:k], fp)
                if bad is not None:
                    i, what = bad
                    raise InvalidEvent(
                        f"line {line + i}: position {fp + i} is not the store's next position "
                        f"({head + 1}): the store holds {what} there; nothing was "
                        f"imported{hint}")
                plan.floors[stream] = fv + k - 1
                plan.skipped += k
            last_us = 0  # the store's last event is the input's: times were checked in pass 1
        errors = []
        for stream, (fv, line) in self.firsts.items():
            if stream in plan.floors:
                continue
            cur = view.version(stream) if head else 0
            if fv <= cur or (fv != cur + 1 and not gaps):  # a gap: removed where it comes from
                errors.append((line, f"stream {stream!r}: version {fv} does not continue "
                                     f"version {cur} (the store's)"))
        if plan.skipped == 0 and self.first_us < last_us:
            errors.append((self.first_line, "recorded_at is earlier than the store's last commit"))
        if errors:
            line, msg = min(errors)
            raise InvalidEvent(f"line {line}: {msg}; nothing was imported{hint}")
        plan.events = self.events - plan.skipped
        if plan.events:
            plan.first_p, plan.last_p = max(p0, head + 1), self.last_p
            streams = set()
            for stream, fv, _fp, _us, blobs, _line in self.groups():
                if fv + len(blobs) - 1 > plan.floors.get(stream, 0):
                    plan.batches += 1
                    streams.add(stream)
            plan.streams = len(streams)
        return plan

    def _plan_renumber(self, view, head: int) -> "_Plan":
        """Each stream continues the store's (events it already holds, same
        id and version, are skipped); positions are the store's next ones."""
        plan = _Plan(floors={})
        started: set = set()
        for stream, fv, _fp, us, blobs, line in self.groups():
            cur = plan.floors.get(stream)
            if cur is None:
                cur = plan.floors[stream] = view.version(stream) if head else 0
            n = len(blobs)
            k = max(0, min(n, cur - fv + 1))
            if k:
                bad = _compare(view.read(stream, fv, fv + k - 1), stream, fv, blobs[:k])
                if bad is not None:
                    i, what = bad
                    raise ImportConflict(
                        f"line {line + i}: stream {stream!r} version {fv + i} in this store is "
                        f"{what}; the stream has diverged; nothing was imported")
                plan.skipped += k
            if k == n:
                continue
            if stream not in started:
                started.add(stream)
                v = fv + k
                if v != cur + 1:
                    raise ImportConflict(
                        f"line {line + k}: stream {stream!r} is at version {cur} in this store, "
                        f"the input continues it from version {v}; nothing was imported")
                if cur and us < view.last_us(stream):
                    raise InvalidEvent(
                        f"line {line + k}: recorded_at is earlier than the last event of stream "
                        f"{stream!r} in this store; nothing was imported")
            plan.events += n - k
            plan.batches += 1
        plan.streams = len(started)
        if plan.events:
            plan.first_p, plan.last_p = head + 1, head + plan.events
        return plan

    def write(self, store, *, batch_size: int = 10_000, sync: bool = True, progress=None,
              stop=None, on_locked=None) -> ImportResult:
        """Plan (under the writer lock, so no one can slip in between) and
        write.  ``stop()``, asked after each batch, ends the import early
        with what is written made durable (``result.interrupted``).
        ``on_locked()`` is called once the lock is held and the plan made,
        right before the first write."""
        progress = progress or NO_PROGRESS
        with _BatchWriter(store, sync, batch_size) as w:
            bulk = w.bulk
            plan = self._plan(_LockedView(store, bulk), bulk.head,
                              getattr(bulk, "last_recorded_us", w.last_us),
                              gaps=getattr(bulk, "keeps_gaps", False))
            result = ImportResult(streams=plan.streams, skipped=plan.skipped, total=self.events)
            if not plan.events:
                return result
            if on_locked is not None:
                on_locked()
            floors = plan.floors
            renumber = self.renumber
            progress.begin("import", total_events=plan.events)
            try:
                for stream, fv, fp, us, blobs, _line in self.groups():
                    k = max(0, min(len(blobs), floors.get(stream, 0) - fv + 1))
                    if k == len(blobs):
                        continue
                    if k:
                        blobs = blobs[k:]
                    res = w.write(stream, fv + k, None if renumber else fp + k, us, blobs)
                    if result.first_position is None:
                        result.first_position = res.position - res.count + 1
                    result.last_position = res.position
                    result.events += res.count
                    result.batches += 1
                    progress.advance(events=res.count)
                    if stop is not None and result.events < plan.events and stop():
                        result.interrupted = True
                        break
            finally:
                progress.end()
        return result


@dataclass
class _Plan:
    events: int = 0
    skipped: int = 0
    batches: int = 0
    streams: int = 0
    first_p: int | None = None
    last_p: int | None = None
    #: stream -> the last version already in the store (events up to it are skipped)
    floors: dict = field(default_factory=dict)

    def result(self, seconds: float, total: int) -> ImportResult:
        return ImportResult(self.events, self.batches, self.streams, self.first_p, self.last_p,
                            seconds, skipped=self.skipped, total=total, dry_run=True)


def _event_id(blob: bytes) -> str:
    return msgpack.unpackb(b"\x94" + blob, raw=False, strict_map_key=False)[0]


def _compare(have: list, stream: str, fv: int, blobs: list, fp: int | None = None):
    """None when the store's events ``have`` are these (same stream, ids,
    versions and, when ``fp`` is given, positions); else (index of the
    first that differs, what the store holds instead)."""
    for i, blob in enumerate(blobs):
        h = have[i] if i < len(have) else None
        if h is None:
            return i, "no event" if fp is not None else "missing"
        eid = _event_id(blob)
        if (h.stream != stream or h.version != fv + i or h.id != eid
                or (fp is not None and h.position != fp + i)):
            return i, (f"a different event (stream {h.stream!r} version {h.version}, id {h.id}; "
                       f"the input has {stream!r} version {fv + i}, id {eid})")
    return None


class _ReadView:
    """The store as the plan sees it without the lock (None: no store)."""

    def __init__(self, store):
        self.store = store

    def version(self, stream: str) -> int:
        return self.store.version(stream) if self.store is not None else 0

    def read(self, stream: str, lo: int, hi: int) -> list:
        from ..errors import NotFound

        if self.store is None:
            return []
        try:
            return list(self.store.read(stream, from_version=lo, to_version=hi))
        except NotFound:
            return []

    def read_all(self, lo: int, hi: int) -> list:
        if self.store is None:
            return []
        return list(self.store.read_all(from_position=lo, to_position=hi))

    def last_us(self, stream: str) -> int:
        from ..model import datetime_to_us

        v = self.version(stream)
        have = self.read(stream, v, v) if v else []
        return datetime_to_us(have[0].recorded_at) if have else 0


class _LockedView(_ReadView):
    """The same, under the writer lock: versions from the writer's tails."""

    def __init__(self, store, bulk):
        super().__init__(store)
        self.bulk = bulk

    def version(self, stream: str) -> int:
        return self.bulk.version(stream)


def spool_name(store) -> str:
    """Where the first pass spools its input: inside a directory store (a
    crash leaves a temp file verify calls harmless), else the system's
    temporary directory."""
    from ..backends.files.names import IMPORT_SPOOL

    if store.directory is None:
        import tempfile
        return os.path.join(tempfile.gettempdir(), "evstore-import")
    return os.path.join(store.directory, IMPORT_SPOOL)


def _store_tail(store) -> tuple[int, int]:
    """(last position, its recorded_us) of ``store`` (None: no store): the
    last event, read like any other (on every backend)."""
    if store is None:
        return 0, 0
    from ..model import datetime_to_us

    for ev in store.read_all(backwards=True, limit=1):
        return ev.position, datetime_to_us(ev.recorded_at)
    return 0, 0


def check_input(source, spool: str, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                workers: int | None = None, progress=None, renumber: bool = False) -> CheckedInput:
    """Pass 1: read, validate and spool recorded events (NDJSON or one JSON
    array, binary ``source``) into files named ``spool`` + a suffix (a
    store's ``STORE/.tmp-import``, or a name beside a store that does not
    exist yet).  Raises InvalidEvent naming the first bad line; opens no
    store."""
    progress = progress or NO_PROGRESS
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    spools: list[str] = []
    try:
        path, size = _regular_file(source)
        progress.begin("check", total_bytes=size)
        try:
            if path is not None and not _is_array(_peek(path)):
                n = workers if workers is not None else (
                    (os.cpu_count() or 1) if size >= PARALLEL_BYTES else 1)
                cuts = _boundaries(path, size, max(n, 1) * 4 if n > 1 else 1)
                spools = [f"{spool}-{stamp}-{i}"
                          for i in range(len(cuts) - 1)]
                chunks = _check_parallel(path, cuts, spools, max_bytes, n, progress, renumber)
            else:
                spools = [f"{spool}-{stamp}-0"]
                chunks = [_check_lines(_source_lines(source), spools[0], max_bytes,
                                       progress, renumber)]
        finally:
            progress.end()
        checked = CheckedInput(chunks, spools, renumber)
        _stitch(checked)
        return checked
    except BaseException:
        for s in spools:
            try:
                os.unlink(s)
            except FileNotFoundError:
                pass
        raise


def import_events(store, source, *, batch_size: int = 10_000, sync: bool = True,
                  progress=None, workers: int | None = None, renumber: bool = False,
                  dry_run: bool = False, stop=None) -> ImportResult:
    """Read recorded events (NDJSON or one JSON array, binary ``source``)
    into ``store``, keeping ids, streams, versions, positions and times
    (``renumber``: taking the store's next positions instead).  Leading
    events the store already holds are skipped (a rerun resumes).

    Raises InvalidEvent (ImportConflict for a renumbered stream that does
    not continue), with nothing written, when any line is invalid or the
    input does not continue the store.  ``dry_run``: check and plan only.
    """
    t0 = time.monotonic()
    with check_input(source, spool_name(store), workers=workers, progress=progress,
                     renumber=renumber,
                     max_bytes=getattr(store, "max_event_bytes", DEFAULT_MAX_EVENT_BYTES)) as inp:
        if dry_run:
            return inp.plan(store).result(time.monotonic() - t0, inp.events)
        result = inp.write(store, batch_size=batch_size, sync=sync, progress=progress, stop=stop)
    result.seconds = time.monotonic() - t0
    return result


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
    from .checks import mp_context

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


def _stitch(inp: CheckedInput) -> None:
    """Check that the chunks continue each other (the input on its own;
    the store is checked by the plan); raise InvalidEvent naming the first
    offending line.  Fills in the input's first line, time and the first
    version of each stream."""
    renumber = inp.renumber
    firsts = inp.firsts
    last: dict = {}  # stream -> (last version, last us)
    expected = last_us = None
    base = 0
    for c in inp.chunks:
        errors = []
        if c.error:
            errors.append(c.error)
        if c.events:
            if not inp.first_line:
                inp.first_line, inp.first_us = base + c.first_line, c.first_us
            if expected is not None and not renumber:
                if c.first_p < expected:
                    errors.append((c.first_line, f"position {c.first_p} does not follow position "
                                                 f"{expected - 1} on the line before"))
                if c.first_us < last_us:
                    errors.append((c.first_line, "recorded_at is earlier than on the line before"))
            for stream, (fv, lv, line, fus, lus) in c.streams.items():
                prev = last.get(stream)
                if prev is None:
                    firsts[stream] = (fv, base + line)
                elif fv != prev[0] + 1:
                    errors.append((line, f"stream {stream!r}: version {fv} does not follow "
                                         f"version {prev[0]}"))
                elif fus < prev[1]:
                    errors.append((line, f"stream {stream!r}: recorded_at is earlier than at "
                                         f"version {prev[0]}"))
                last[stream] = (lv, lus)
        if errors:
            line, msg = min(errors)
            raise InvalidEvent(f"line {base + line}: {msg}; nothing was imported")
        if c.events:
            expected = c.last_p + 1
            last_us = c.last_us
        base += c.lines


class _BatchWriter:
    """Writes checked batches through the backend's bulk session
    (:meth:`evstore.core.backend.Backend.bulk`), which excludes other writers
    for the whole import, making them durable once per ``batch_size`` events
    (or only at the end with ``--no-sync``).  See docs/OPERATIONS.md, "Import"."""

    def __init__(self, store, sync: bool, batch_size: int):
        self.store = store
        self.sync = sync
        self.batch_size = batch_size
        self.unsynced = 0

    def __enter__(self):
        # Read before the session: a backend's reads may wait for its lock
        # (memory's does).  A session that knows the exact figure under
        # its lock says so (``last_recorded_us``); each write is checked
        # against the store anyway.
        self.last_us = _store_tail(self.store)[1]
        self._cm = self.store.bulk()
        self.bulk = self._cm.__enter__()
        return self

    def write(self, stream, fv, fp, us, blobs):
        """``fp`` None: the batch takes the next positions (a merge)."""
        res = self.bulk.write(stream, fv, fp, us, blobs)
        self.unsynced += res.count
        if self.sync and self.unsynced >= self.batch_size:
            self.bulk.sync()
            self.unsynced = 0
        return res

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
