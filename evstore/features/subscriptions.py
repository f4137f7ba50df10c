"""Subscriptions: follow the store as events are committed.

``subscribe()`` (and ``evstore tail``) read the store's public API only:
``head()`` to learn that something was committed, then ``read_all()`` (for
``$all``) or ``read()`` (for one stream) for the events.  Both return only
committed events, whole batches, in order, and never take the writer lock,
so a follower can neither block a writer nor see half an append.

Waiting (docs/TAIL.md, "Waiting"): through the store's
:class:`~evstore.core.backend.Watcher` (``store.watcher()``), which every
backend provides: inotify on a directory (on Linux), LISTEN/NOTIFY on
PostgreSQL.  A follower so notified wakes within a millisecond of a commit
and costs next to nothing while the store is idle; it still looks every
``NOTIFY_SAFETY`` seconds (a directory's watcher falls back to polling if
such a look ever finds a commit no notification announced: network file
systems).  A watcher that polls (no inotify, or ``wake="poll"``) is asked
for ``head()`` with a back-off from 1 ms after activity to
``poll_interval`` when idle.  The watcher's pipe wakes the waiter early:
that is how :meth:`Subscription.stop` works from any thread or a signal
handler without taking a lock.

Acknowledgement (docs/TAIL.md, "Checkpoints"): an event counts as handled
when the consumer asks for the next one (or stops cleanly after it), so a
checkpoint never passes an event whose handling did not finish.  Saves are
coalesced while catching up on a backlog (at most one per
``checkpoint_interval``) and made whenever the subscription is caught up or
stops: after a crash, only events since the last save are delivered again.
With ``ack="manual"`` the consumer says what is handled instead
(:meth:`Subscription.ack`), which is how ``tail --exec`` (features/handoff.py)
moves a checkpoint only past events whose handler succeeded; with
``commit=False`` the checkpoint is read and never written.
"""
from __future__ import annotations

import math
import time
from collections import deque

from .checkpoints import CheckpointStore, check_name
from ..errors import StreamNotFound, UsageError
from ..model import RecordedEvent, check_stream_id

#: Longest sleep between two checks when polling (no notifications).
DEFAULT_POLL = 0.05
#: First sleep after activity when polling; doubles up to the poll interval.
MIN_POLL = 0.001
#: When notified, check anyway this often.  If such a check ever finds an
#: event no notification announced (a network file system, say), a
#: directory's watcher switches to polling for good.
NOTIFY_SAFETY = 2.0
#: Positions (or versions) read per round: bounds memory on a long backlog.
CHUNK = 1000
#: While catching up, save the checkpoint at most this often (seconds).
CHECKPOINT_INTERVAL = 0.2


def subscribe(store, stream: str | None = None, from_position: int | None = None,
              checkpoint: str | None = None, idle_timeout: float | None = None,
              **kw) -> "Subscription":
    """Follow ``stream`` (or ``$all`` when None); see :class:`Subscription`."""
    return Subscription(store, stream, from_position=from_position, checkpoint=checkpoint,
                        idle_timeout=idle_timeout, **kw)


def ndjson_tail(store, last: int | None = None, from_position: int | None = None):
    """What a :class:`Subscription` of ``$all`` that neither follows, filters
    nor keeps a checkpoint would hand out -- the ``last`` N events, or those
    from ``from_position`` on, to the head now -- as NDJSON pieces
    (:meth:`EventStore.ndjson_all`), or None when there is no fast path.
    With nothing removed, positions are dense: the last N are the head's.
    One process (damage: the events before it are printed, then the error)."""
    head = store.head()
    start = from_position if from_position is not None else max(head - (last or 0) + 1, 1)
    return store.ndjson_all(start, head, workers=1)


def _check_arguments(stream, from_position, from_version, last, checkpoint, idle_timeout,
                     max_count, stream_prefix, wake, poll_interval, checkpoint_interval,
                     ack) -> None:
    """Refuse a subscription's arguments before anything is opened or held
    (UsageError naming the argument); the library's and the CLI's callers
    get the same messages."""
    if stream is not None:
        check_stream_id(stream)
        if stream_prefix is not None:
            raise UsageError("stream_prefix filters $all; it does not go with a stream")
    elif from_version is not None:
        raise UsageError("from_version needs a stream (use from_position for $all)")
    if from_position is not None and from_version is not None:
        raise UsageError("give from_position or from_version, not both")
    if last is not None and (from_position is not None or from_version is not None):
        raise UsageError("give last or a starting point (from_...), not both")
    for name, v in (("from_position", from_position), ("from_version", from_version),
                    ("last", last), ("max_count", max_count)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise UsageError(f"invalid {name}: {v!r} (must be a whole number >= 0)")
    for name, v in (("idle_timeout", idle_timeout), ("poll_interval", poll_interval),
                    ("checkpoint_interval", checkpoint_interval)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not v >= 0 or math.isinf(v) and name != "idle_timeout"):
            raise UsageError(f"invalid {name}: {v!r} (must be a number >= 0)")
    if wake not in ("auto", "notify", "poll"):
        raise UsageError(f"invalid wake {wake!r}: auto, notify or poll")
    if ack not in ("auto", "manual"):
        raise UsageError(f"invalid ack {ack!r}: auto or manual")
    if checkpoint is not None:
        check_name(checkpoint)


class Subscription:
    """An iterator of :class:`RecordedEvent` in position order, as committed.

    Where it starts, first match wins: the checkpoint saved under
    ``checkpoint`` (resume after it); ``from_position`` (or, for a stream,
    ``from_version``); the ``last`` N events (that pass the filters); else
    the beginning.  ``from_position``/``from_version``/``last`` only seed a
    checkpoint that does not exist yet, so the same call resumes the same
    consumer; ``notes`` says when they were ignored.

    It ends (``StopIteration``) after ``max_count`` events, after
    ``idle_timeout`` seconds without an event, when caught up if
    ``follow=False`` (at the head as of the start), or after :meth:`stop`
    -- callable from any thread or a signal handler.  Ending saves the
    checkpoint and releases the name; so does :meth:`close` (or leaving a
    ``with`` block), which keeps the event in hand unacknowledged.

    ``types`` and ``stream_prefix`` (``$all`` only) filter; a filtered
    consumer's checkpoint still moves past the events it skips.  ``wake`` is
    "auto" (the store's notifications when they work), "notify" (refused
    when there are none: a directory without inotify) or "poll".

    ``ack="manual"``: an event counts as handled only when :meth:`ack` says
    so (asking for the next one is not enough), for consumers that work on
    several events at once (:meth:`take`) or hand them on.  ``commit=False``:
    the checkpoint is read (where to start) but never written, not even
    created, and the name is not held: any number of such readers may run,
    and ``CheckpointStore.set`` may move the checkpoint meanwhile.
    """

    def __init__(self, store, stream: str | None = None, *, from_position: int | None = None,
                 from_version: int | None = None, last: int | None = None,
                 checkpoint: str | None = None, idle_timeout: float | None = None,
                 max_count: int | None = None, types=None, stream_prefix: str | None = None,
                 follow: bool = True, wake: str = "auto", poll_interval: float = DEFAULT_POLL,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL, ack: str = "auto",
                 commit: bool = True):
        _check_arguments(stream, from_position, from_version, last, checkpoint, idle_timeout,
                         max_count, stream_prefix, wake, poll_interval, checkpoint_interval, ack)
        self.store = store
        self.stream = stream
        self.checkpoint = checkpoint
        self.idle_timeout = idle_timeout
        self.max_count = max_count
        self.types = frozenset(types) if types else None
        self.stream_prefix = stream_prefix
        self.follow = follow
        self.poll_interval = max(poll_interval, MIN_POLL)
        self.checkpoint_interval = checkpoint_interval
        self.manual = ack == "manual"
        self.commit = commit
        #: Things the caller may want to tell a user (e.g. an ignored --from).
        self.notes: list[str] = []
        #: Events handed out so far.
        self.count = 0

        self._init_state()
        self._open(from_position, from_version, last, wake)
        self._idle_since = time.monotonic()

    def _init_state(self) -> None:
        """Where the subscription stands before it has read anything."""
        self._stopped = False
        self._closed = False
        self._buf: deque[RecordedEvent] = deque()
        self._out: int | None = None   # position of the event the consumer holds
        self._last_out = 0             # manual: position of the last event handed out
        self._acked = 0                # every event at or before it is handled
        self._saved = -1               # what the checkpoint file says
        self._saved_at = 0.0
        self._scan_pos = 0             # every event at or before it is buffered, out or done
        self._ver = 0                  # stream mode: the last version read
        self._seen_head = -1           # stream mode: head at the last complete look
        self._stop_pos = None          # follow=False: the head as of the start
        self._stop_ver = None
        self._sleep = MIN_POLL
        self._cps = self._hold = None
        self._waker = None

    def _open(self, from_position, from_version, last, wake: str) -> None:
        """Hold the checkpoint's name (one consumer per name), set up the
        waker, and find the starting point; on any failure, release what
        was taken before raising."""
        store, checkpoint, commit, follow = self.store, self.checkpoint, self.commit, self.follow
        try:
            if checkpoint is not None:
                self._cps = CheckpointStore(store)
                if commit:
                    self._hold = self._cps.hold(checkpoint)
                    self._hold.__enter__()
            if follow:  # (a subscription that ends when caught up never waits)
                self._waker = _Waker(store, poll=wake == "poll", require=wake == "notify")
                self._waker.watcher.poll_interval = self.poll_interval
            self._start(from_position, from_version, last)
        except BaseException:
            self._release()
            raise

    # -- the public surface ----------------------------------------------------------------
    @property
    def position(self) -> int:
        """Every event at or before this position has been handled (acknowledged)."""
        return self._acked

    @property
    def notify(self) -> bool:
        """Whether waiting uses the store's notifications (else polling)."""
        w = self._waker
        return w is not None and w.watcher.notifying

    def stop(self) -> None:
        """End the iteration at the next safe point: before the next event
        is handed out, or at once if waiting.  Safe from any thread and from
        a signal handler (it sets a flag and writes a byte to a pipe)."""
        self._stopped = True
        w = self._waker
        if w is not None:
            w.wake()

    def close(self) -> None:
        """Save the checkpoint (the event in hand, if any, stays unacknowledged)
        and release the name.  Call it from the iterating thread, or after it
        is done; other threads use :meth:`stop`."""
        if self._closed:
            return
        try:
            self._save()
        finally:
            self._release()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> "Subscription":
        return self

    def __del__(self) -> None:  # fds and the name only: no file writes at shutdown
        try:
            self._release()
        except Exception:  # noqa: BLE001
            pass

    def __next__(self) -> RecordedEvent:
        if self._closed:
            raise StopIteration
        if self._out is not None:  # the consumer came back: it handled that event
            self._acked = max(self._acked, self._out)
            self._out = None
        while True:
            if self._done():
                self._end()
            if self._buf:
                return self._hand_out()
            if not self.manual or self._acked >= self._last_out:
                self._acked = max(self._acked, self._scan_pos)
            if self._fetch():
                continue
            self._save()  # caught up: the checkpoint is as fresh as it can be
            if not self.follow:
                self._end()
            self._wait()

    def take(self, n: int) -> list[RecordedEvent]:
        """Up to ``n`` events: waits for the first as ``next()`` does, then
        adds only events already committed (never waits for more).  [] when
        the subscription ends.  Meant for ``ack="manual"``."""
        try:
            out = [next(self)]
        except StopIteration:
            return []
        while len(out) < n and not self._done():
            if self._buf:
                out.append(self._hand_out())
            elif not self._fetch():
                break
        return out

    def ack(self, position: int) -> None:
        """(``ack="manual"``) Every event handed out at or before
        ``position`` is handled; the checkpoint may move past it (it is saved
        at the subscription's usual moments: when caught up, every
        ``checkpoint_interval`` on a backlog, when it ends)."""
        if not self.manual:
            raise UsageError("ack() is for subscriptions made with ack='manual'")
        if position > self._last_out:
            raise UsageError(f"position {position} was not handed out yet")
        if position == self._last_out:
            # everything handed out is handled; what lies before the next
            # event was filtered out
            position = self._buf[0].position - 1 if self._buf else self._scan_pos
        self._acked = max(self._acked, position)

    def _done(self) -> bool:
        return self._stopped or (self.max_count is not None and self.count >= self.max_count)

    def _hand_out(self) -> RecordedEvent:
        ev = self._buf.popleft()
        if self.manual:
            self._last_out = ev.position
        else:
            # Everything before it was handed out and handled, or filtered out.
            self._acked = max(self._acked, ev.position - 1)
        if (self.checkpoint is not None and self._acked > self._saved
                and time.monotonic() - self._saved_at >= self.checkpoint_interval):
            self._save()
        if not self.manual:
            self._out = ev.position
        self.count += 1
        self._sleep = MIN_POLL
        self._idle_since = time.monotonic()
        return ev

    # -- where to begin ------------------------------------------------------------------
    def _start(self, from_position, from_version, last) -> None:
        es = self.store
        head = es.head()
        saved = self._cps.get(self.checkpoint) if self._cps else None
        if saved is not None:
            ignored = [n for n, v in (("from_position", from_position),
                                      ("from_version", from_version), ("last", last))
                       if v is not None]
            if ignored:
                self.notes.append(
                    f"checkpoint {self.checkpoint!r} resumes after position {saved.position}; "
                    f"{', '.join(ignored)} ignored (reset the checkpoint to move it)")
            pos = saved.position
            if pos > head:
                self.notes.append(
                    f"checkpoint {self.checkpoint!r} is at position {pos}, past the store's "
                    f"head ({head}): the events it saw are gone; resuming at the head")
                pos = head
            self._start_after_position(pos)
            # (-1: save at the first chance: moved to the head, or a file without a checksum)
            self._saved = saved.position if saved.position == pos and saved.sealed else -1
        elif from_position is not None:
            self._start_after_position(max(from_position - 1, 0))
        elif from_version is not None:
            self._ver = max(from_version - 1, 0)
            have = min(self._ver, es.version(self.stream))
            self._scan_pos = self._position_upto(have)
        elif last is not None:
            self._start_last(last, head)
        if not self.follow:
            self._stop_pos = head
            if self.stream is not None:
                self._stop_ver = es.version(self.stream)
        self._acked = self._last_out = self._scan_pos
        if self._cps is not None and saved is None and self.commit:
            self._save(force=True)  # a new consumer exists from now on, at its seed

    def _start_after_position(self, pos: int) -> None:
        self._scan_pos = pos
        if self.stream is not None:
            self._ver = self._version_at_or_before(pos)

    def _start_last(self, n: int, head: int) -> None:
        es = self.store
        # Only the oldest of the last n matters (the start): the others are
        # not kept, so `tail -n 1000000` holds one event, not a million.
        if self.stream is None:
            oldest = _last_of(es.read_all(to_position=head, backwards=True, limit=n,
                                          types=self.types, stream_prefix=self.stream_prefix)) if n else None
            self._scan_pos = oldest.position - 1 if oldest else head
            return
        v = es.version(self.stream)
        oldest = None
        if v and n:
            try:
                oldest = _last_of(es.read(self.stream, to_version=v, backwards=True, limit=n,
                                          types=self.types))
            except StreamNotFound:
                oldest = None
        if oldest:
            self._ver, self._scan_pos = oldest.version - 1, oldest.position - 1
        else:
            self._ver, self._scan_pos = v, head

    def _position_of(self, version: int) -> int:
        """The position of the first readable event at or after ``version``
        (removed events leave gaps; none: past every position)."""
        if version < 1:
            return 0
        evs = _events(self.store.read, self.stream, from_version=version, limit=1)
        return evs[0].position if evs else math.inf

    def _position_upto(self, version: int) -> int:
        """The position of the last readable event at or before ``version``
        (0: none): a consumer that has seen ``version`` has seen it."""
        if version < 1:
            return 0
        evs = _events(self.store.read, self.stream, to_version=version, backwards=True, limit=1)
        return evs[0].position if evs else 0

    def _version_at_or_before(self, pos: int) -> int:
        """The stream's last version whose position is <= ``pos`` (binary
        search over indexed reads: O(log n), whatever the stream's length;
        a removed version counts as the next readable one's position)."""
        lo, hi = 0, self.store.version(self.stream)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._position_of(mid) <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    # -- reading -------------------------------------------------------------------------
    def _fetch(self) -> bool:
        """Read the next chunk of committed events into the buffer.  False
        when there is nothing new (caught up)."""
        es = self.store
        head = es.head()
        if self._stop_pos is not None:
            head = min(head, self._stop_pos)
        if self.stream is None:
            if head <= self._scan_pos:
                return False
            to = min(head, self._scan_pos + CHUNK)
            # Read from the last position already seen, not the next one: its
            # index entry is surely written, while the next one's may not be
            # yet (the writer indexes right after the frame), and a missing
            # entry makes the core scan the whole segment.
            lo = max(self._scan_pos, 1)
            floor = self._scan_pos
            for ev in es.read_all(from_position=lo, to_position=to, types=self.types,
                                  stream_prefix=self.stream_prefix):
                # Strictly increasing, whatever the reader hands us: "once, in
                # order" must not depend on the core getting a segment roll
                # right (docs/TAIL.md, "Found in the core").
                if ev.position > floor:
                    self._buf.append(ev)
                    floor = ev.position
            self._scan_pos = to
            return True
        if head == self._seen_head:
            return False
        version = es.version(self.stream)  # after head(): covers every event up to head
        if self._stop_ver is not None:
            version = min(version, self._stop_ver)
        moved = False
        if version > self._ver:
            to = min(version, self._ver + CHUNK)
            last = None
            # Removed versions are skipped (a deleted stream reads as none)
            for ev in _events(es.read, self.stream, from_version=self._ver + 1, to_version=to):
                last = ev
                if self.types is None or ev.type in self.types:
                    self._buf.append(ev)
            self._ver = to
            if last is not None:
                self._scan_pos = max(self._scan_pos, last.position)
            moved = True
            if to < version:
                return True
        self._seen_head = head
        if head > self._scan_pos:
            self._scan_pos = head
            moved = True
        return moved

    # -- waiting -------------------------------------------------------------------------
    def _wait(self) -> None:
        if self._waker.watcher.notifying:
            timeout = NOTIFY_SAFETY
        else:
            timeout = self._sleep
            self._sleep = min(self._sleep * 2, self.poll_interval)
        if self.idle_timeout is not None:
            left = self._idle_since + self.idle_timeout - time.monotonic()
            if left <= 0:
                self._end()
            timeout = min(timeout, left)
        self._waker.wait(timeout)

    # -- ending --------------------------------------------------------------------------
    def _end(self):
        self.close()
        raise StopIteration

    def _save(self, force: bool = False) -> None:
        if self._cps is None or not self.commit or (self._acked <= self._saved and not force):
            return
        self._cps.save(self.checkpoint, self._acked, self.stream)
        self._saved = self._acked
        self._saved_at = time.monotonic()

    def _release(self) -> None:
        self._closed = True
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.__exit__(None, None, None)
        waker, self._waker = self._waker, None
        if waker is not None:
            waker.close()


def _last_of(events):
    """The last of an iterable of events (None: none), holding one at a time."""
    last = None
    for last in events:
        pass
    return last


def _events(read, stream: str, **kw) -> list[RecordedEvent]:
    """``read(stream, **kw)`` as a list; a stream with nothing readable
    (deleted, or not there yet) is no events, not an error, to a follower."""
    try:
        return list(read(stream, **kw))
    except StreamNotFound:
        return []


class _Waker:
    """The subscription's hold on ``store.watcher()``: it remembers the head
    it last saw, so each wait returns as soon as the head moves past it (or
    on :meth:`wake`, or the timeout).  Spurious wake-ups are fine: the
    caller looks again."""

    def __init__(self, store, poll: bool = False, require: bool = False):
        self._head = store.head()  # before the watcher: a commit in between wakes at once
        self.watcher = store.watcher()
        if poll:
            self.watcher.stop_notify()
        if require and not self.watcher.notifying:
            self.close()
            raise UsageError("file-system notifications (inotify) are not available here")

    def wake(self) -> None:
        self.watcher.wake()

    def wait(self, timeout: float) -> bool:
        """False when the timeout passed with the head where it was."""
        head = self.watcher.wait(self._head, max(timeout, 0))
        moved, self._head = head > self._head, max(head, self._head)
        return moved

    def close(self) -> None:
        self.watcher.close()
