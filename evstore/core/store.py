"""EventStore: the library's front end, the same on every backend.

Why a front end: what a user can observe that does not depend on where the
bytes live is written here once -- checking and packing events, parsing
expected versions (the rule itself is :mod:`.rules`, applied by each backend
under its lock), ranges, time windows, ``find``, automatic snapshots after
the acknowledgement, ``info``'s shared fields, and the entry points to the
features (snapshots, subscribe, replay, verify).  Below it a
:class:`~evstore.core.backend.Backend` keeps events: a directory
(:mod:`evstore.backends.files`), memory, or PostgreSQL, chosen by
:func:`evstore.backends.open_backend` from the location.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ..backends import is_memory, is_url, open_backend
from ..disk.records import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    PackedEvents,
    RecordedEvent,
    check_stream_id,
    datetime_to_us,
    format_timestamp,
    normalize,
    pack_events,
    pack_fields,
    us_to_datetime,
)
from ..errors import EventNotFound, InvalidEvent, UsageError
from .rules import ANY, NO_STREAM, STREAM_EXISTS, parse_expected  # noqa: F401  (public names)


class EventStore:
    """An event store: a directory, ``memory:NAME`` or a PostgreSQL URL.

    ``EventStore(location)`` creates the store when it is absent
    (``create=False`` raises StoreNotFound instead; on PostgreSQL the schema
    is created by the first write, never by a read).  Many processes and
    threads may open the same store; writers serialise, readers never wait.
    """

    def __init__(self, location, sync: bool = True, segment_bytes: int = 64 * 1024 * 1024,
                 snapshot_every: int | None = None, reducer=None, *,
                 lock_timeout: float = 30.0, create: bool = True,
                 max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                 snapshot_timeout: float | None = None):
        if segment_bytes < 1:
            raise UsageError("segment_bytes must be positive")
        self.location = location if is_url(location) or is_memory(location) else str(location)
        #: the directory of a file store (None on other backends)
        self.path = None if is_url(location) or is_memory(location) else Path(location)
        self.sync = sync
        self.segment_bytes = segment_bytes
        self.snapshot_every = snapshot_every
        self.reducer = reducer
        #: seconds an append waits for its automatic snapshot (None: 5)
        self.snapshot_timeout = snapshot_timeout
        self.lock_timeout = lock_timeout
        self.max_event_bytes = max_event_bytes
        self._snapshots = None
        self._closed = False
        self.backend = open_backend(location, create=create, lock_timeout=lock_timeout,
                                    sync=sync, segment_bytes=segment_bytes)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.backend.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def kind(self) -> str:
        """``files``, ``memory`` or ``postgresql`` (``info``'s "backend")."""
        return self.backend.kind

    @property
    def directory(self) -> str | None:
        """The store's directory, on the file backend only (operations that
        work on files -- verify, repair, import's spool -- need it)."""
        return getattr(self.backend, "directory", None)

    # -- appending ---------------------------------------------------------------------------
    def append(self, stream: str, events: Iterable, expected_version=ANY) -> AppendResult:
        """Append ``events`` (NewEvent or dicts) to ``stream`` as one atomic batch.

        Raises WrongExpectedVersion (nothing written) when the stream's version
        is not ``expected_version``; InvalidEvent when an event cannot be
        stored (nothing written).  A retry of a batch that is already there
        (same ids at the versions it would have taken) succeeds without
        writing (:mod:`evstore.core.rules`).
        """
        if self._closed:
            raise UsageError("the store is closed")
        check_stream_id(stream)
        expected = parse_expected(expected_version)
        # Packed as they come (records.pack_events): a batch of any length
        # is held as its packed bytes, never as a list of its dicts.
        evs = events if isinstance(events, PackedEvents) else \
            pack_events(events, self.max_event_bytes)
        if not evs:
            raise InvalidEvent("no events to append")
        if evs.max_bytes > self.max_event_bytes:
            for i, b in enumerate(evs.blobs):
                if len(b) > self.max_event_bytes:
                    raise InvalidEvent(f"event {i + 1}: {len(b)} bytes, over the size limit "
                                       f"of {self.max_event_bytes} bytes")
        done = self.backend.append(stream, evs, expected)
        result = done.result
        if self.snapshot_every and self.reducer is not None and done.written:
            # After the commit, and bounded: nothing here can fail or hold
            # the append (a failure or a timeout is a logged warning).
            from ..features.snapshots import auto_snapshot_bounded
            auto_snapshot_bounded(self, stream, done.version_before, result.version,
                                  self.snapshot_timeout)
        return result

    def append_recorded(self, stream: str, events: list, first_version: int,
                        first_position: int, recorded_at) -> AppendResult:
        """Append one batch *as it was recorded elsewhere* (import): the
        caller fixes versions, positions and ``recorded_at``.  Refused with
        InvalidEvent, nothing written, unless the batch continues exactly what
        the store holds (:func:`evstore.core.rules.continues`).  ``events``
        are NewEvents or dicts with ids."""
        check_stream_id(stream)
        evs = [normalize(e, f"event {i + 1}") for i, e in enumerate(events)]
        if not evs:
            raise InvalidEvent("no events to append")
        blobs = [pack_fields(e, self.max_event_bytes, f"event {i + 1}") for i, e in enumerate(evs)]
        us = recorded_at if isinstance(recorded_at, int) else datetime_to_us(recorded_at)
        with self.backend.bulk() as session:
            result = session.write(stream, first_version, first_position, us, blobs)
            session.finish()
        return result

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> int:
        """The last committed position (0 for an empty store)."""
        return self.backend.head()

    def version(self, stream: str) -> int:
        """The stream's current version; 0 when it has no events."""
        check_stream_id(stream)
        return self.backend.version(stream)

    def exists(self, stream: str) -> bool:
        return self.version(stream) > 0

    def read(self, stream: str, from_version: int = 1, to_version: int | None = None,
             backwards: bool = False, limit: int | None = None,
             types: Iterable[str] | None = None, since=None, until=None) -> Iterator[RecordedEvent]:
        """Events of ``stream`` with versions in ``[from_version, to_version]``.

        Forwards: oldest first, ``limit`` keeps the first N.  Backwards: newest
        first, ``limit`` keeps the newest N.  ``types`` keeps only those event
        types, ``since`` / ``until`` (aware datetimes, both inclusive) only
        those recorded in that window (the limit counts events returned).
        Raises StreamNotFound when the stream has no events.  Runs in
        constant memory.
        """
        check_stream_id(stream)
        _check_range(from_version, to_version, limit)
        window = _window(since, until)
        lo = max(from_version or 1, 1)
        if window is None:
            return self.backend.read_stream(stream, lo, to_version, backwards, limit, types)
        it = self.backend.read_stream(stream, lo, to_version, backwards, None, types)
        return _limited(_in_window(it, window, backwards), limit)

    def read_all(self, from_position: int = 1, to_position: int | None = None,
                 limit: int | None = None, backwards: bool = False,
                 types: Iterable[str] | None = None,
                 stream_prefix: str | None = None, since=None, until=None) -> Iterator[RecordedEvent]:
        """Every event of the store in position order (``$all``); the
        filters are those of :meth:`read`, and ``stream_prefix``."""
        _check_range(from_position, to_position, limit)
        window = _window(since, until)
        lo = max(from_position or 1, 1)
        if window is None:
            return self.backend.read_all(lo, to_position, backwards, limit, types, stream_prefix)
        it = self.backend.read_all(lo, to_position, backwards, None, types, stream_prefix)
        return _limited(_in_window(it, window, backwards, ordered=False), limit)

    def find(self, event_id: str) -> RecordedEvent:
        """The event whose id is ``event_id``; raises EventNotFound.  On
        files there is no index by id: this reads the store from the start
        (about a second per million events, see the README's figures)."""
        ev = self.backend.find(event_id)
        if ev is None:
            raise EventNotFound(event_id)
        return ev

    def streams(self, prefix: str | None = None, since=None, until=None):
        """Yield (stream, version, first_recorded_at, last_recorded_at) for
        every stream with events, sorted by id.  ``since`` / ``until`` (aware
        datetimes) keep the streams whose life overlaps that window: last
        event at or after ``since``, first event at or before ``until``."""
        window = _window(since, until)
        for row in self.backend.streams(prefix):
            if window is not None and (
                    (window[0] is not None and row.last_recorded_us < window[0])
                    or (window[1] is not None and row.first_recorded_us is not None
                        and row.first_recorded_us > window[1])):
                continue
            yield StreamInfo(row.stream, row.version,
                             None if row.first_recorded_us is None
                             else us_to_datetime(row.first_recorded_us),
                             us_to_datetime(row.last_recorded_us))

    def info(self, per_stream: bool = False) -> dict:
        """The store's totals and what operators watch: the fields every
        backend gives (store, backend, streams, events, bytes, segments,
        snapshots, first and last recorded_at, checkpoints), then the
        backend's own (a directory's bytes by kind of file, leftovers, the
        fsync-failure flag; ``per_stream`` rows)."""
        stats = self.backend.stats(per_stream=per_stream) if per_stream else self.backend.stats()
        first_us = stats.pop("first_recorded_us", None)
        last_us = stats.pop("last_recorded_us", None)
        store = os.path.abspath(self.location) if self.directory is not None else \
            getattr(self.backend, "location", str(self.location))
        out = {"store": store}
        for key, value in stats.items():
            out[key] = value
            if key == "bytes_by_kind" or (key == "snapshots" and "bytes_by_kind" not in stats):
                out["first_recorded_at"] = _fmt_us(first_us)
                out["last_recorded_at"] = _fmt_us(last_us)
        out.setdefault("first_recorded_at", _fmt_us(first_us))
        out.setdefault("last_recorded_at", _fmt_us(last_us))
        rows = out.pop("per_stream", None)
        out["checkpoints"] = self._checkpoint_rows(stats.get("events", 0))
        if rows is not None:
            out["per_stream"] = rows
        return out

    def _checkpoint_rows(self, head: int) -> list[dict]:
        from ..features.checkpoints import checkpoint_rows
        return checkpoint_rows(self, head)

    # -- features (each in its own module, on the public API) ----------------------------------
    @property
    def snapshots(self):
        if self._snapshots is None:
            from ..features.snapshots import SnapshotStore
            self._snapshots = SnapshotStore(self)
        return self._snapshots

    def replay(self, stream: str, reducer=None, to_version: int | None = None, **kw):
        from ..features.replay import replay
        return replay(self, stream, reducer if reducer is not None else self.reducer,
                      to_version=to_version, **kw)

    def subscribe(self, stream: str | None = None, from_position: int | None = None,
                  checkpoint: str | None = None, idle_timeout: float | None = None, **kw):
        from ..features.subscriptions import subscribe
        return subscribe(self, stream=stream, from_position=from_position,
                         checkpoint=checkpoint, idle_timeout=idle_timeout, **kw)

    def verify(self, **kw):
        from ..ops import verify
        return verify(self, **kw)

    # -- for features and operations -----------------------------------------------------------
    def watcher(self):
        """The backend's :class:`~evstore.core.backend.Watcher` (close it)."""
        return self.backend.watcher()

    @contextmanager
    def bulk(self, timeout: float | None = None):
        """The backend's :class:`~evstore.core.backend.BulkSession` (import)."""
        with self.backend.bulk(timeout) as session:
            yield session

    @contextmanager
    def bulk_writer(self, timeout: float | None = None):
        """The file backend's bulk writer (import's fast path on files)."""
        with self.backend.bulk_writer(timeout) as w:
            yield w

    @contextmanager
    def writer_lock(self, timeout: float | None = None):
        """Hold the writer lock (for operations such as repair and import)."""
        with self.backend.writer_lock(timeout) as log:
            yield log


class StreamInfo(tuple):
    """(stream, version, first_recorded_at, last_recorded_at) of one stream."""

    __slots__ = ()

    def __new__(cls, stream, version, first_recorded_at, last_recorded_at):
        return tuple.__new__(cls, (stream, version, first_recorded_at, last_recorded_at))

    stream = property(lambda s: s[0])
    version = property(lambda s: s[1])
    first_recorded_at = property(lambda s: s[2])
    last_recorded_at = property(lambda s: s[3])

    def to_dict(self) -> dict:
        return {"stream": self.stream, "version": self.version,
                "first_recorded_at": format_timestamp(self.first_recorded_at)
                if self.first_recorded_at else None,
                "last_recorded_at": format_timestamp(self.last_recorded_at)}


def _fmt_us(us):
    return None if us is None else format_timestamp(us_to_datetime(us))


def _check_range(lo, hi, limit) -> None:
    for name, v in (("from", lo), ("to", hi), ("limit", limit)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise UsageError(f"invalid {name}: {v!r} (must be a whole number >= 0)")


def _window(since, until):
    """(since, until) as microseconds since the epoch (None: open), or None
    when neither is given; both must be timezone-aware datetimes."""
    if since is None and until is None:
        return None
    out = []
    for name, t in (("since", since), ("until", until)):
        if t is not None and getattr(t, "tzinfo", None) is None:
            raise UsageError(f"invalid {name}: {t!r} (a timezone-aware datetime)")
        out.append(None if t is None else datetime_to_us(t))
    return tuple(out)


def _in_window(it, window, backwards: bool, ordered: bool = True):
    """Events of ``it`` recorded in ``window`` (see :func:`_window`).
    ``ordered``: recorded_at never decreases along ``it`` -- true of a
    stream (append stamps max(now, last), bulk writes refuse an earlier
    time than the stream's last event), so the scan stops at the first event
    past the window's far end.  Not of the whole store: a merge (``import
    --renumber``) keeps each event's time, so older events may follow newer
    ones there, and every event is checked."""
    lo, hi = window
    for ev in it:
        us = datetime_to_us(ev.recorded_at)
        if hi is not None and us > hi:
            if backwards or not ordered:
                continue
            return
        if lo is not None and us < lo:
            if backwards and ordered:
                return
            continue
        yield ev


def _limited(it, limit):
    if limit == 0:
        return
    n = 0
    for ev in it:
        yield ev
        n += 1
        if limit is not None and n >= limit:
            return
