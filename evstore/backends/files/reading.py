"""The file backend's readers: the head, a stream's version, reading a stream
and ``$all`` forwards and backwards with limits and filters.

Readers never wait on the writer lock: they trust a stream log only up to the
records the commit log confirms, and fall back to the other copy of an event
whose record is damaged.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator

from ...disk.commitlog import CommitLog
from ...disk.streamlog import StreamLog, StreamTail
from ...errors import CorruptStore, DamagedCopyWarning, StoreIOError, StreamNotFound
from ...model import RecordedEvent, check_stream_id
from .names import STREAMS_DIR

# How many positions EventStore.version catches up on through the commit
# log's batch heads before it asks the stream log afresh.
_CATCH_UP = 256


class FileReading:
    """Mixed into :class:`evstore.backends.files.engine.FileBackend`."""

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> int:
        """The last committed position (0 for an empty store)."""
        log = self._reader_log()
        try:
            return log.refresh().head
        except OSError as e:
            raise StoreIOError(f"cannot read {self._dir}: {e.strerror or e}") from e

    def _reader_stream(self, stream: str) -> tuple[StreamLog, StreamTail]:
        log = self._reader_log()
        log.refresh()
        sl = StreamLog(os.path.join(self._dir, STREAMS_DIR), stream)
        if not sl.exists():
            return sl, StreamTail()
        sl.check_id()
        tail = sl.tail(self._is_committed(log, stream))
        if tail.cut_from is not None:
            # Bytes past the last good record: a write in flight, or damage
            # that may hide committed records; their commit-log copies are
            # read instead (see _records).
            later = self._committed_past(log, stream, tail)
            if later is not None:
                tail.version, tail.position, tail.recorded_us = later
        return sl, tail

    @staticmethod
    def _committed_past(log: CommitLog, stream: str, tail):
        """(version, position, recorded_us) of the stream's last event when
        the commit log holds events of it after ``tail``, else None."""
        found = None
        for s, fv, fp, us, n in log.batch_heads_from(tail.position + 1):
            if s == stream and fv + n - 1 > tail.version:
                found = (fv + n - 1, fp + n - 1, us)
        return found

    def version(self, stream: str) -> int:
        """The stream's current version; 0 when it has no events.

        Writers with exact expected versions ask this before every append, so
        each reader thread remembers the versions it found and the head it
        found them at, and later only reads the heads of the batches committed
        since (the commit log is the truth; the stream log is consulted
        again only when too much has happened in between).
        """
        check_stream_id(stream)
        log = self._reader_log()
        local = self._local
        known = getattr(local, "versions", None)
        if known is None or local.versions_of is not log:
            known = local.versions = {}
            local.versions_of = log
        hit = known.get(stream)
        if hit is not None:
            try:
                head = log.refresh().head
                seen, version = hit
                if head - seen <= _CATCH_UP:
                    for s, fv, _fp, _us, n in log.batch_heads_from(seen + 1):
                        if s == stream:
                            version = fv + n - 1
                    known[stream] = (head, version)
                    return version
            except OSError as e:
                raise StoreIOError(f"cannot read {self._dir}: {e.strerror or e}") from e
        sl, tail = self._reader_stream(stream)
        sl.close()
        version = tail.version or self._tail_of_removed(stream, tail).version
        if len(known) >= 1024:
            known.clear()
        known[stream] = (log.tail.head, version)
        return version

    def exists(self) -> bool:
        """Always True: a FileBackend is opened on a store that exists (or
        was just created)."""
        return True

    def read_stream(self, stream: str, lo: int = 1, hi: int | None = None,
                    backwards: bool = False, limit: int | None = None,
                    types: Iterable[str] | None = None) -> Iterator[RecordedEvent]:
        """:meth:`Backend.read_stream`: StreamNotFound when called."""
        sl, tail = self._reader_stream(stream)
        if tail.version == 0:
            sl.close()
            raise StreamNotFound(stream)
        return self._iter_stream(sl, tail, lo, hi, backwards, limit, types)

    def _iter_stream(self, sl, tail, lo, hi, backwards, limit, types):
        try:
            # versions before the log's first were removed by compaction
            lo = max(lo or 1, sl.first_version(tail))
            hi = tail.version if hi is None else min(hi, tail.version)
            if lo > hi or limit == 0:
                return
            wanted = frozenset(types) if types else None
            log = self._reader_log()
            if not backwards:
                it = self._records(log, sl, tail, lo, hi)
            else:
                it = _backwards(lambda a, b: self._records(log, sl, tail, a, b), lo, hi,
                                _first_chunk(limit, wanted))
            yield from _filter(it, wanted, limit)
        except OSError as e:
            raise StoreIOError(f"reading stream {sl.stream!r}: {e.strerror or e}") from e
        finally:
            sl.close()

    def _records(self, log: CommitLog, sl, tail, lo: int, hi: int):
        """``sl.records(tail, lo, hi)``, where a record the stream log cannot
        give (damaged) comes from its batch in the commit log, the event's
        other copy: one damaged copy never hides an intact event.  Each use
        of the other copy issues a :class:`DamagedCopyWarning`; only when
        neither copy can be read is it CorruptStore."""
        v, after = lo, None  # the next version wanted; the position before it
        while v <= hi:
            try:
                for ev in sl.records(tail, v, hi):
                    yield ev
                    v, after = ev.version + 1, ev.position
                return
            except CorruptStore as damage:
                batch = self._other_copy(log, sl, tail, v, after, damage)
            warnings.warn(DamagedCopyWarning(
                f"stream {sl.stream!r}: a damaged record in its stream log was read from "
                "its copy in the commit log; run 'evstore verify' for a report and "
                "'evstore repair' to fix it"), stacklevel=1)
            for ev in batch.events(v - batch.first_version):
                if ev.version > hi:
                    return
                yield ev
                v, after = ev.version + 1, ev.position

    def _other_copy(self, log: CommitLog, sl, tail, v: int, after, damage):
        """The commit-log batch that holds version ``v`` of ``sl``'s stream.
        Looks first where the neighbours say it is (the batch of the event
        before it, or of the next event or the stream's last), then walks the
        batch heads from the event before it (or the start)."""
        stream = sl.stream
        hints = []
        if after is not None:
            hints.append(after + 1)
        if v < tail.version:
            try:
                hints.extend(ev.position for ev in sl.records(tail, v + 1, v + 1))
            except CorruptStore:
                pass
        else:
            hints.append(tail.position)
        try:
            log.refresh()
            for p in hints:
                if not 1 <= p <= log.tail.head:
                    continue
                s, fv, fp, _us, n = log.head_of_batch(p)
                if s == stream and fv <= v < fv + n:
                    return log.batch_at(fp)
            for s, fv, fp, _us, n in log.batch_heads_from((after or 0) + 1):
                if s == stream and fv <= v < fv + n:
                    return log.batch_at(fp)
                if s == stream and fv > v:
                    break
            other = "it is not in the commit log"
        except (CorruptStore, ValueError) as e:
            other = f"its commit-log copy cannot be read either: {_no_hint(e)}"
        read = f"the events before version {v} were read; " if v > 1 else ""
        raise CorruptStore(
            f"stream {stream!r}: version {v} is damaged in both its copies ({_no_hint(damage)}; "
            f"{other}); {read}run 'evstore verify' for a report and 'evstore repair' "
            "to fix what can be fixed") from None

    def read_all(self, lo: int = 1, hi: int | None = None, backwards: bool = False,
                 limit: int | None = None, types: Iterable[str] | None = None,
                 prefix: str | None = None) -> Iterator[RecordedEvent]:
        """:meth:`Backend.read_all`, from the commit log."""
        log = self._reader_log()
        log.refresh()
        return self._iter_all(log, lo, hi, log.tail.head, limit, backwards, types, prefix)

    def ndjson_chunks(self, lo: int, hi: int, workers: int | None = None):
        """:meth:`Backend.ndjson_chunks`: formatted from the commit log's
        frames (backends/files/ndjson.py)."""
        from .ndjson import chunks

        def run():
            if lo > hi:
                return
            try:
                yield from chunks(self._dir, lo, hi, workers)
            except OSError as e:
                raise StoreIOError(f"reading the commit log: {e.strerror or e}") from e

        return run()

    def ndjson_stream(self, stream: str, lo: int = 1, hi: int | None = None):
        """:meth:`Backend.ndjson_stream`: the stream log's records, and the
        commit log's frames for the rest of a big batch
        (backends/files/ndjson.py): StreamNotFound when called."""
        from .ndjson import stream_chunks

        sl, tail = self._reader_stream(stream)
        if tail.version == 0:
            sl.close()
            raise StreamNotFound(stream)

        def run():
            try:
                first = max(lo or 1, sl.first_version(tail))
                last = tail.version if hi is None else min(hi, tail.version)
                if first > last:
                    return
                log = self._reader_log()
                yield from stream_chunks(self._dir, lambda a, b: self._records(log, sl, tail, a, b),
                                         log, stream, first, last)
            except OSError as e:
                raise StoreIOError(f"reading stream {sl.stream!r}: {e.strerror or e}") from e
            finally:
                sl.close()

        return run()

    def _iter_all(self, log, lo, hi, head, limit, backwards, types, prefix):
        lo = max(lo or 1, 1)
        hi = head if hi is None else min(hi, head)
        if lo > hi or limit == 0:
            return
        wanted = frozenset(types) if types else None

        def forward(a, b):
            for batch in log.batches(a, b):
                if prefix is not None and not batch.stream.startswith(prefix):
                    continue
                for ev in batch.events(max(a - batch.first_position, 0)):
                    if ev.position > b:
                        return
                    yield ev

        try:
            it = forward(lo, hi) if not backwards else \
                _backwards(forward, lo, hi, _first_chunk(limit, wanted))
            yield from _filter(it, wanted, limit)
        except OSError as e:
            raise StoreIOError(f"reading the commit log: {e.strerror or e}") from e


def _no_hint(e: Exception) -> str:
    """An error's message without its "; run 'evstore verify' ..." advice
    (a message that quotes it gives that advice once, at its end)."""
    return str(e).split("; run 'evstore", 1)[0]

def _filter(it, wanted, limit):
    n = 0
    for ev in it:
        if wanted is not None and ev.type not in wanted:
            continue
        yield ev
        n += 1
        if limit is not None and n >= limit:
            return


def _first_chunk(limit: int | None, wanted) -> int:
    return limit if limit and wanted is None else 16


def _backwards(forward, lo: int, hi: int, first: int = 16, most: int = 1024):
    """Newest first over ``forward(a, b)`` (oldest first), a chunk at a time:
    memory stays bounded by the chunk, however long the range.  Chunks start
    at ``first`` (a limit's worth: seeking the last ten events must not
    decode a thousand) and double up to ``most``."""
    chunk = max(first, 1)
    while hi >= lo:
        a = max(lo, hi - chunk + 1)
        items = list(forward(a, hi))
        yield from reversed(items)
        hi = a - 1
        chunk = min(chunk * 2, most)
