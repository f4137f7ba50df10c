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
import time
from contextlib import contextmanager
from collections.abc import Iterable, Iterator

from ..plain import path_str  # not pathlib: start-up time (see there)
from ..backends import is_memory, is_url, open_backend
from ..model import (
    DEFAULT_MAX_EVENT_BYTES,
    AppendResult,
    PackedEvents,
    RecordedEvent,
    check_stream_id,
    datetime_to_us,
    normalize,
    pack_events,
    pack_fields,
    us_to_datetime,
)
from ..errors import EventNotFound, InvalidEvent, StreamNotFound, UsageError
from .forgetting import Forgetting, Retention
from .filters import (check_range, fmt_us, in_window, limited, max_age_us, readable_only, time_window,
                      young)
from .results import Deleted, RetentionInfo, StreamInfo, Truncated
from .rules import ANY, parse_expected


def _clock() -> int:
    """Microseconds since the epoch: the "now" of retention's ``max_age``
    (a module function: tests replace it)."""
    return time.time_ns() // 1000


#: The view of a backend that cannot forget yet: nothing is removed.
_NOTHING_REMOVED = Forgetting({}, [], 0)


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
        self._dir = None if is_url(location) or is_memory(location) else path_str(location)
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
    def path(self):
        """The directory of a file store, a ``pathlib.Path`` (None on other
        backends).  Made when asked: pathlib costs a short command ~4 ms of
        start-up, and only a few commands use it."""
        if self._dir is None:
            return None
        from pathlib import Path

        return Path(self._dir)

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
        # Packed as they come (model.pack_events): a batch of any length
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
            from ..features.autosnap import auto_snapshot_bounded
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
        """The stream's current version; 0 when it never had events.
        Removed events count: a stream deleted at V is still at V, and its
        next event is V+1."""
        check_stream_id(stream)
        return self.backend.version(stream)

    def exists(self, stream: str) -> bool:
        """Whether the stream has an event that is readable (not deleted,
        truncated or past its retention)."""
        check_stream_id(stream)
        view = self.forgetting()
        if view.empty:
            return self.backend.version(stream) > 0
        return self._last_readable(view, stream) is not None

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
        check_range(from_version, to_version, limit)
        return self._read(self.forgetting(), stream, max(from_version or 1, 1), to_version,
                          backwards, limit, types, time_window(since, until))

    def _read(self, view: Forgetting, stream: str, lo: int, to_version, backwards, limit,
              types, window) -> Iterator[RecordedEvent]:
        """:meth:`read` in ``view`` (arguments checked)."""
        if view.empty or (stream not in view.cuts and view.rule_for(stream) is None):
            # (what the backend still stores of a stream nothing was cut from
            # or ruled out of is readable: compact removed only what was not)
            if window is None:
                return self.backend.read_stream(stream, lo, to_version, backwards, limit, types)
            it = self.backend.read_stream(stream, lo, to_version, backwards, None, types)
            return limited(in_window(it, window, backwards), limit)
        last = self._last_readable(view, stream)
        if last is None:
            raise StreamNotFound(stream)
        # Removed events are a prefix of the stream's versions: start past
        # them; max_age's are the ones recorded before its limit.
        first = view.first_version(stream, last.version)
        hi = last.version if to_version is None else min(to_version, last.version)
        oldest = view.oldest_us(stream)
        if oldest is None and window is None:
            return self.backend.read_stream(stream, max(lo, first), hi, backwards, limit, types)
        it = self.backend.read_stream(stream, max(lo, first), hi, backwards, None, types)
        if oldest is not None:
            it = young(it, oldest, backwards)
        if window is not None:
            it = in_window(it, window, backwards)
        return limited(it, limit)

    def read_all(self, from_position: int = 1, to_position: int | None = None,
                 limit: int | None = None, backwards: bool = False,
                 types: Iterable[str] | None = None,
                 stream_prefix: str | None = None, since=None, until=None) -> Iterator[RecordedEvent]:
        """Every event of the store in position order (``$all``); the
        filters are those of :meth:`read`, and ``stream_prefix``."""
        check_range(from_position, to_position, limit)
        window = time_window(since, until)
        lo = max(from_position or 1, 1)
        view = self.forgetting()
        if view.empty:
            if window is None:
                return self.backend.read_all(lo, to_position, backwards, limit, types,
                                             stream_prefix)
            it = self.backend.read_all(lo, to_position, backwards, None, types, stream_prefix)
            return limited(in_window(it, window, backwards, ordered=False), limit)
        # The range is fixed first, so every version read later is at least
        # that of any event in it.
        head = self.backend.head()
        hi = head if to_position is None else min(to_position, head)
        it = self.backend.read_all(lo, hi, backwards, None, types, stream_prefix)
        it = readable_only(it, self.readable_check(view))
        if window is not None:
            it = in_window(it, window, backwards, ordered=False)
        return limited(it, limit)

    def ndjson_all(self, from_position: int = 1, to_position: int | None = None,
                   workers: int | None = None):
        """``$all`` from ``from_position`` to ``to_position`` (None: the head
        now) as NDJSON, when the backend has a fast path for it: an iterator
        of ``(bytes, count)`` pieces whose concatenation is exactly the
        lines ``read_all`` would give, one ``json.dumps(ev.to_dict(),
        ensure_ascii=False)`` each.  None when there is no fast path -- the
        backend has none, or some event is removed (deleted, truncated, past
        its retention): then format :meth:`read_all` yourself."""
        check_range(from_position, to_position, None)
        if not self.forgetting().empty:
            return None
        head = self.backend.head()
        hi = head if to_position is None else min(to_position, head)
        return self.backend.ndjson_chunks(max(from_position or 1, 1), hi, workers)

    def ndjson_stream(self, stream: str, from_version: int = 1, to_version: int | None = None):
        """``stream``'s events from ``from_version`` to ``to_version`` as
        NDJSON, when the backend has a fast path for it: ``(bytes, count)``
        pieces whose concatenation is exactly the lines :meth:`read` would
        give, one ``json.dumps(ev.to_dict(), ensure_ascii=False)`` each.
        None when there is no fast path -- the backend has none, or some of
        the stream's events are removed (cut, past a retention rule): then
        format :meth:`read` yourself.  StreamNotFound as :meth:`read`."""
        check_stream_id(stream)
        check_range(from_version, to_version, None)
        view = self.forgetting()
        if not (view.empty or (stream not in view.cuts and view.rule_for(stream) is None)):
            return None
        return self.backend.ndjson_stream(stream, max(from_version or 1, 1), to_version)

    def find(self, event_id: str) -> RecordedEvent:
        """The first readable event (by position) whose id is ``event_id``
        (ids are unique within a batch, not within a store); raises
        EventNotFound.  On files there is no index by id: this reads the
        store from the start (about a second per million events, see the
        README's figures)."""
        view = self.forgetting()
        # the first READABLE event with the id: ids are unique within a
        # batch only, and a removed event must not hide a readable one
        ev = self.backend.find(event_id, None if view.empty else self.readable_check(view))
        if ev is None:
            raise EventNotFound(event_id)
        return ev

    def streams(self, prefix: str | None = None, since=None, until=None):
        """Yield (stream, version, first_recorded_at, last_recorded_at) for
        every stream with events, sorted by id.  ``since`` / ``until`` (aware
        datetimes) keep the streams whose life overlaps that window: last
        event at or after ``since``, first event at or before ``until``."""
        window = time_window(since, until)
        view = self.forgetting()
        for row in self.backend.streams(prefix):
            if not view.empty and (row.stream in view.cuts or view.rule_for(row.stream)):
                row = self._readable_row(view, row)
                if row is None:
                    continue
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
        head = self.backend.head()
        view = self.forgetting()
        if not view.empty:  # what is readable, not what is stored
            stats["streams"] = stats["events"] = 0
            first_us = last_us = None
            for row in self.streams():
                first = self._first_readable(view, row.stream)
                stats["streams"] += 1
                stats["events"] += row.version - first.version + 1
                t0, t1 = datetime_to_us(row.first_recorded_at), datetime_to_us(row.last_recorded_at)
                first_us = t0 if first_us is None else min(first_us, t0)
                last_us = t1 if last_us is None else max(last_us, t1)
        store = os.path.abspath(self.location) if self.directory is not None else \
            getattr(self.backend, "location", str(self.location))
        out = {"store": store}
        for key, value in stats.items():
            out[key] = value
            if key == "bytes_by_kind" or (key == "snapshots" and "bytes_by_kind" not in stats):
                out["first_recorded_at"] = fmt_us(first_us)
                out["last_recorded_at"] = fmt_us(last_us)
        out.setdefault("first_recorded_at", fmt_us(first_us))
        out.setdefault("last_recorded_at", fmt_us(last_us))
        rows = out.pop("per_stream", None)
        out["checkpoints"] = self._checkpoint_rows(head)
        if rows is not None:
            out["per_stream"] = rows
        out["head"] = head  # (added last: fields are only ever added at the end)
        return out

    def _checkpoint_rows(self, head: int) -> list[dict]:
        from ..features.checkpoints import checkpoint_rows
        return checkpoint_rows(self, head)

    # -- forgetting ------------------------------------------------------------------------------
    def forgetting(self) -> Forgetting:
        """What is readable now: the cuts, the retention rules and the
        clock, frozen (:class:`~evstore.core.forgetting.Forgetting`).  Each
        read takes one; features that read several times take one and
        pass it on, so they agree with themselves."""
        cuts, rules = self.backend.forgetting_state()
        if not cuts and not rules:
            return _NOTHING_REMOVED
        return Forgetting(cuts, rules, _clock())

    def readable_check(self, view: Forgetting):
        """A function telling whether one RecordedEvent is readable in
        ``view`` (each stream's figures looked up once)."""
        memo: dict[str, tuple[int, int | None]] = {}

        def readable(ev) -> bool:
            got = memo.get(ev.stream)
            if got is None:
                s = ev.stream
                cut = view.cuts.get(s)
                # the current version matters to max_count and tombstones only
                current = self.backend.version(s) if view.counts_versions(s) or (
                    cut is not None and cut.hard) else ev.version
                got = memo[s] = (view.first_version(s, current), view.oldest_us(s))
            if ev.version < got[0]:
                return False
            return got[1] is None or datetime_to_us(ev.recorded_at) >= got[1]

        return readable

    def _last_readable(self, view: Forgetting, stream: str):
        """The stream's last event if it is readable, else None: the events
        a stream still stores are a suffix of its versions, and its removed
        events a prefix, so either the last one is readable or none is."""
        current = self.backend.version(stream)
        if current == 0 or view.first_version(stream, current) > current:
            return None
        try:
            last = next(iter(self.backend.read_stream(stream, current, current)), None)
        except StreamNotFound:
            return None
        oldest = view.oldest_us(stream)
        if last is None or (oldest is not None and datetime_to_us(last.recorded_at) < oldest):
            return None
        return last

    def _first_readable(self, view: Forgetting, stream: str):
        """The stream's first readable event, or None."""
        try:
            return next(iter(self._read(view, stream, 1, None, False, 1, None, None)), None)
        except StreamNotFound:
            return None

    def _readable_row(self, view: Forgetting, row):
        """``row`` (a StreamRow) as readers see it, or None when nothing of
        the stream is readable."""
        last = self._last_readable(view, row.stream)
        if last is None:
            return None
        first = self._first_readable(view, row.stream)
        if first is None:
            return None
        return row._replace(first_recorded_us=datetime_to_us(first.recorded_at),
                            last_recorded_us=datetime_to_us(last.recorded_at))

    def delete(self, stream: str, expected_version=ANY, hard: bool = False) -> "Deleted":
        """Make every event of ``stream`` unreadable, at once and for good.

        The stream keeps its version: a later append continues at V+1
        (``expected_version=V`` works), unless ``hard``: then a tombstone
        refuses every later append (StreamDeleted, exit 3).  StreamNotFound
        when the stream never had events; WrongExpectedVersion when
        ``expected_version`` does not match (nothing changed).  Deleting a
        deleted stream again is harmless.  ``compact`` removes the bytes."""
        if self._closed:
            raise UsageError("the store is closed")
        check_stream_id(stream)
        expected = parse_expected(expected_version)
        version, cut = self.backend.cut(stream, expected, None, bool(hard))
        return Deleted(stream, version, "hard" if cut.hard else "soft")

    def truncate(self, stream: str, before: int) -> "Truncated":
        """Make the events of ``stream`` with versions below ``before``
        unreadable; versions do not change.  ``before`` runs from 1 to the
        stream's version + 1 (UsageError otherwise); a truncate below an
        earlier one changes nothing (``Truncated.before`` says where the
        stream now starts).  Replay then starts from a snapshot at or after
        version ``before - 1``."""
        if self._closed:
            raise UsageError("the store is closed")
        check_stream_id(stream)
        if isinstance(before, bool) or not isinstance(before, int):
            raise UsageError(f"invalid version {before!r}: must be a whole number >= 1")
        version, cut = self.backend.cut(stream, ANY, before, False)
        return Truncated(stream, version, cut.floor)

    def retention(self, stream_or_prefix: str, max_age=None, max_count: int | None = None, *,
                  prefix: bool = False, clear: bool = False) -> list["RetentionInfo"]:
        """Set, clear or show the retention rule of a stream (or, with
        ``prefix``, of every stream whose id starts with it), and return
        the rules that match it, the one in force first.

        ``max_age`` (``"90d"``, ``"12h"``, ``"30m"``, ``"45s"`` or a
        timedelta of whole seconds) keeps the events recorded less than
        that long ago; ``max_count`` keeps the newest N versions.  Giving
        either replaces the target's rule with one of exactly those limits;
        ``clear`` removes it; neither shows the rules.  A rule hides events
        at once and clearing it shows them again, until ``compact``
        removes their bytes.  A stream's own rule wins over prefix rules;
        among prefix rules the longest prefix wins."""
        if self._closed:
            raise UsageError("the store is closed")
        target = stream_or_prefix
        if not isinstance(target, str):
            raise UsageError(f"invalid retention target {target!r}")
        if not prefix:
            check_stream_id(target)
        age_us = max_age_us(max_age)
        if max_count is not None and (isinstance(max_count, bool) or not isinstance(max_count, int)
                                      or max_count < 1):
            raise UsageError(f"invalid max_count {max_count!r}: must be a whole number >= 1 "
                             "(to remove every event, delete the stream)")
        if clear and (age_us is not None or max_count is not None):
            raise UsageError("clear removes the rule: give it without max_age and max_count")
        if clear or age_us is not None or max_count is not None:
            self.backend.set_retention(Retention(target, bool(prefix), age_us, max_count))
        return self.retention_rules(target, prefix=prefix)

    def retention_rules(self, target: str | None = None, *, prefix: bool = False
                        ) -> list["RetentionInfo"]:
        """Every rule (``target`` None), or those matching ``target``: a
        stream's own rule and the prefix rules it falls under (for a
        prefix: the prefix rules it starts with), the one in force first."""
        rules = self.backend.retention_rules()
        if target is None:
            return [RetentionInfo.of(r, True) for r in
                    sorted(rules, key=lambda r: (r.target, r.prefix))]
        view = Forgetting({}, rules, 0)
        mine = [] if prefix else [r for r in rules if not r.prefix and r.target == target]
        mine += [r for r in view.prefix_rules if target.startswith(r.target)]
        return [RetentionInfo.of(r, i == 0) for i, r in enumerate(mine)]

    def compact(self, dry_run: bool = False, progress=None) -> dict:
        """Remove the bytes of every event that is no longer readable, and
        the snapshots of deleted streams; afterwards no file (or table) of
        the store holds them.  Runs beside readers, writers and followers.
        Returns ``{"events_removed", "bytes_before", "bytes_after",
        "seconds"}``; ``dry_run``: what it would remove, nothing changed.
        ``progress(done, total)`` is called with byte counts."""
        if self._closed:
            raise UsageError("the store is closed")
        t0 = time.monotonic()
        out = self.backend.compact(self.forgetting, dry_run=dry_run, progress=progress)
        return {"events_removed": out["events_removed"], "bytes_before": out["bytes_before"],
                "bytes_after": out["bytes_after"], "seconds": round(time.monotonic() - t0, 3)}

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
