"""``import``: recorded events (``evstore export`` output) into a store.

Two passes, so that bad input is refused with nothing written:

1. *Check*: every line is parsed, validated (the event rules, the size limit, ids,
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

import os
import time

import msgpack

from ..errors import ImportConflict, InvalidEvent
from ..model import DEFAULT_MAX_EVENT_BYTES
from .progress import NO_PROGRESS
from .import_check import (MAX_GROUP, _boundaries, _check_lines, _check_parallel, _is_array, _peek,
                           _regular_file, _source_lines)
from .import_write import (ImportResult, _BatchWriter, _LockedView, _Plan, _ReadView, _compare,
                           _store_tail)

__all__ = ["ImportResult", "CheckedInput", "check_input", "import_events", "spool_name"]

#: Inputs at least this large are checked by worker processes.
PARALLEL_BYTES = 16 << 20


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


def spool_name(store) -> str:
    """Where the first pass spools its input: inside a directory store (a
    crash leaves a temp file verify calls harmless), else the system's
    temporary directory."""
    from ..backends.files.names import IMPORT_SPOOL

    if store.directory is None:
        import tempfile
        return os.path.join(tempfile.gettempdir(), "evstore-import")
    return os.path.join(store.directory, IMPORT_SPOOL)


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
