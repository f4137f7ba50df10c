"""The backend seam: what EventStore needs from a place that keeps events.

Why a seam: the same store must live in a directory, in memory (the reference
the model tests compare against) and in PostgreSQL (many machines), with one
set of rules.  Everything a user can observe that does not depend on where
the bytes live -- validation, the expected-version rule (:mod:`.rules`),
snapshots on a schedule, checkpointed subscriptions, replay, export and
import -- is written once above this interface.  A backend only keeps
events, positions and a few small documents, atomically and durably, and
says exactly what it holds.

Terms used by every method below: a *position* is the 1-based place of an
event in the whole store, dense and assigned in commit order; a *version* is
its 1-based place in its stream; ``recorded_us`` is the commit time in
microseconds since the Unix epoch (UTC).  Arguments reach a backend already
validated by the front end (stream ids, ranges >= 0, parsed expected
versions, packed events); backends do not check them again.
"""
from __future__ import annotations

import math
import os
import select
import threading
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from collections.abc import Callable, Iterable, Iterator, Sequence

from ..plain import named_tuple  # not typing.NamedTuple: start-up time (see there)
from ..model import AppendResult, Prepared, RecordedEvent, unpack, us_to_datetime  # noqa: F401
from ..errors import CorruptStore, StoreLocked

TYPE_CHECKING = False  # not typing's: importing typing costs ~5 ms of start-up
if TYPE_CHECKING:
    from .forgetting import Cut, Forgetting, Retention

BACKEND_FORMAT = 1  #: the layout version backends other than files record


@named_tuple
class Appended:
    """The outcome of :meth:`Backend.append`.  ``written`` is False for a
    retry that found the batch already stored; then ``version_before`` is
    -1 (no automatic snapshot is due)."""

    result: AppendResult
    written: bool
    version_before: int


@named_tuple
class StreamRow:
    stream: str
    version: int
    first_recorded_us: int
    last_recorded_us: int


@named_tuple
class CheckpointRow:
    """A durable consumer's place: every event at or before ``position``
    has been handled.  ``stream`` is what it followed (None: ``$all``).
    ``sealed`` False: a backend read it from a document without a checksum
    (a file written by an older evstore); ``verify`` warns, and the next
    save adds one.  Backends that keep rows always say True."""

    name: str
    position: int
    stream: str | None
    updated_at: str
    sealed: bool = True


class ConsumerBusy(StoreLocked):
    """Another consumer holds this checkpoint name (exit 1)."""

    def __init__(self, name: str, detail: str = ""):
        self.name = name
        super().__init__(f"checkpoint {name!r} is in use by another consumer{detail}")


def decode_event(stream: str, version: int, position: int, recorded_us: int,
                 blob) -> RecordedEvent:
    """A RecordedEvent from a stored :class:`Prepared` blob.  Raises
    CorruptStore when the bytes are not one packed event."""
    try:
        fields = unpack(b"\x94" + bytes(blob))
        eid, etype, data, metadata = fields
    except Exception as e:  # msgpack raises several unrelated types
        raise CorruptStore(f"the event at position {position} does not decode: {e}") from None
    return RecordedEvent(stream, version, position, eid, etype, data, metadata,
                         us_to_datetime(recorded_us))


def decode_rows(rows) -> Iterator[RecordedEvent]:
    """:func:`decode_event` over rows of ``(stream, version, position,
    recorded_us, blob)``, for readers that decode pages of many rows.

    Why a second loop: a page of 1,000 rows spends most of its time per
    event in Python, and two things repeat there: the datetime of
    ``recorded_us`` (every event of a batch shares one commit time, so it is
    made once per run of equal times, as the file readers do) and the call
    frames around the one msgpack decode.  A row that does not decode goes
    through :func:`decode_event`, the one place that words the error."""
    last_us, when = None, None
    new, make = tuple.__new__, RecordedEvent
    for stream, version, position, us, blob in rows:
        try:
            eid, etype, data, metadata = unpack(b"\x94" + blob)
        except Exception:  # noqa: BLE001 - decode_event raises the precise error
            yield decode_event(stream, version, position, us, blob)
            continue
        if us != last_us:
            last_us, when = us, us_to_datetime(us)
        yield new(make, (stream, version, position, eid, etype, data, metadata, when))


class BulkSession(ABC):
    """Writes batches recorded elsewhere (import) while the session excludes
    every other writer.  Batches written are committed no later than the
    next :meth:`sync`; a crash keeps a prefix of the batches, never part of
    one."""

    @property
    @abstractmethod
    def head(self) -> int:
        """The store's last position, including this session's writes."""

    @abstractmethod
    def version(self, stream: str) -> int:
        """The stream's version, including this session's writes."""

    @abstractmethod
    def write(self, stream: str, first_version: int, first_position: int | None,
              recorded_us: int, blobs: Sequence[bytes]) -> AppendResult:
        """Store one batch with its versions, positions and time as given.

        ``first_position`` None renumbers: the batch takes the next
        positions, and ``recorded_us`` may be older than the last commit.
        Refused with InvalidEvent, nothing written, unless the batch
        continues the store exactly (:func:`evstore.core.rules.continues`)."""

    @abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable (and visible to readers)."""

    #: Whether :meth:`write` accepts a batch that leaves a gap before it (in
    #: positions, or in its stream's versions) and records the gap as removed
    #: events (``rules.continues(gaps=True)``): an import that keeps
    #: positions then keeps an export's gaps.  Without it, import refuses them.
    keeps_gaps = False

    def finish(self) -> None:
        """The end of a successful import: :meth:`sync`."""
        self.sync()


class Watcher(ABC):
    """Wakes a follower when events are committed.  :meth:`wake` may be
    called from any thread or a signal handler: it only sets a flag and
    writes a byte to a pipe, and only *tries* a lock (one a handler waited
    for could be held by the code it interrupted).  Subclasses name the file
    descriptors that become readable on a commit and how to drain them.

    ``notifying`` says whether commits wake it (False: it polls the head,
    e.g. a directory without inotify); a follower that polls backs off
    itself, one that is notified still looks now and then."""

    notifying = True
    #: How often a watcher that polls looks at the head (seconds); a caller
    #: may change it.  Watchers that are notified do not use it.
    poll_interval = 0.05

    def __init__(self, backend: "Backend"):
        self.backend = backend
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._woken = False
        # wake() must never write to a closed (maybe reused) descriptor
        # while close() runs in another thread: close swaps under this lock
        self._lock = threading.Lock()

    def wait(self, after: int, timeout: float | None) -> int:
        """Return the store's head as soon as it is past ``after``, or when
        ``timeout`` seconds pass, or when :meth:`wake` is called (whichever
        is first).  The head returned may still be ``after``: the caller
        compares.  Never misses a commit: a commit after the head is read
        makes the descriptors readable."""
        deadline = None if timeout is None else time.monotonic() + timeout
        silent = False  # the last sleep ended with nothing announced
        while True:
            head = self.backend.head()
            if head > after or self._woken:
                if silent and head > after:
                    self._unannounced()
                self._woken = False
                return head
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return head
            ready = _sleep([self._r, *self._fds()], self._timeout(left))
            silent = not ready
            for fd in ready:
                if fd == self._r:
                    _drain_pipe(self._r)
                else:
                    self._drain(fd)

    def wake(self) -> None:
        self._woken = True
        if not self._lock.acquire(blocking=False):
            return  # closing right now: nobody left to wake
        try:
            if self._w >= 0:
                os.write(self._w, b"!")
        except OSError:
            pass  # the pipe is full (already woken)
        finally:
            self._lock.release()

    def stop_notify(self) -> None:
        """Poll from now on (``wake="poll"``, or notifications that proved
        unreliable).  Backends whose notifications are part of the store
        itself (memory, PostgreSQL) keep them: this does nothing there."""

    def close(self) -> None:
        with self._lock:
            fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _fds(self) -> list[int]:
        return []

    def _unannounced(self) -> None:
        """A look after a sleep that nothing interrupted found a commit: a
        subclass whose notifications can be lost (a network file system)
        decides whether to trust them any longer."""

    def _timeout(self, left: float | None) -> float | None:
        """How long one select may sleep (a subclass that lost its
        notifications shortens it to poll)."""
        return left

    def _drain(self, fd: int) -> None:
        _drain_pipe(fd)


def _sleep(fds: list[int], timeout: float | None) -> list[int]:
    """The descriptors among ``fds`` that became readable within
    ``timeout`` seconds (None: no limit).  ``poll``, not ``select``: a
    process with over a thousand open files still waits correctly."""
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return select.select(fds, [], [], timeout)[0]
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    ms = None if timeout is None else max(math.ceil(timeout * 1000), 0)
    return [fd for fd, _ in p.poll(ms)]


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass


class Backend(ABC):
    """Where a store's events and small documents live.

    Thread-safe: one instance serves every thread of a process; many
    processes (on PostgreSQL: many machines) may open the same store.  Only
    writers exclude each other, for at most ``lock_timeout`` seconds
    (StoreLocked, exit 1, when that runs out); readers never wait for them
    and never see an uncommitted or partial batch.
    """

    kind: str = "?"          #: ``info``'s "backend": files, memory, postgresql
    location: str = ""       #: what messages name (never a password)
    lock_timeout: float = 30.0
    sync: bool = True        #: durable when a write returns (False: --no-sync)

    # -- writing ----------------------------------------------------------------------
    @abstractmethod
    def append(self, stream: str, events: Sequence[Prepared], expected) -> Appended:
        """Append ``events`` (at least one) to ``stream`` as one atomic batch.

        Under the writer lock (or in one transaction that holds it), the
        backend reads the stream's current version and asks
        :func:`evstore.core.rules.decide` (with the stored events of
        :func:`~evstore.core.rules.retry_window`, when it names one) whether
        to write; it writes only when told to, at versions current+1.. and
        positions head+1.., with one ``recorded_us`` for the batch: the
        clock, but never earlier than the store's last commit.  Positions are
        visible to readers in order: no reader sees P+1 before P.  A
        stream whose cut is hard refuses the append under that same lock
        (:func:`evstore.core.forgetting.check_append`).  Creates
        the store when it does not exist yet.  Returns when the batch is
        durable (unless ``sync`` is False)."""

    @abstractmethod
    def bulk(self, timeout: float | None = None) -> AbstractContextManager[BulkSession]:
        """A :class:`BulkSession`, excluding other writers until it ends
        (waiting at most ``timeout``, default ``lock_timeout``).  Leaving
        the block commits what was written, even on an exception: each batch
        was checked when written, as with appends."""

    # -- reading ----------------------------------------------------------------------
    @abstractmethod
    def exists(self) -> bool:
        """Whether the store has been created (by a first write)."""

    @abstractmethod
    def head(self) -> int:
        """The last committed position; 0 for an empty or absent store."""

    @abstractmethod
    def version(self, stream: str) -> int:
        """The stream's current version; 0 when it has no events.  Removed
        events count: a stream deleted at V is still at V (also after
        ``compact`` removed its bytes)."""

    @abstractmethod
    def read_stream(self, stream: str, lo: int = 1, hi: int | None = None,
                    backwards: bool = False, limit: int | None = None,
                    types: Iterable[str] | None = None) -> Iterator[RecordedEvent]:
        """The stream's events with versions in ``[lo, hi]`` (inclusive;
        ``hi`` None: the version when the call is made), oldest first or,
        ``backwards``, newest first.  ``types`` keeps only those types;
        ``limit`` then keeps the first N in the chosen direction.  Raises
        StreamNotFound *when called* (not when iterated) if the stream has
        no events.  Constant memory however long the stream."""

    @abstractmethod
    def read_all(self, lo: int = 1, hi: int | None = None, backwards: bool = False,
                 limit: int | None = None, types: Iterable[str] | None = None,
                 prefix: str | None = None) -> Iterator[RecordedEvent]:
        """Every event with a position in ``[lo, hi]`` (``hi`` None: the
        head when the call is made) in position order, or newest first;
        ``types`` and ``prefix`` (of the stream id) filter, then ``limit``
        keeps the first N.  An absent store reads as empty."""

    def ndjson_chunks(self, lo: int, hi: int,
                      workers: int | None = None) -> Iterator[tuple[bytes, int]] | None:
        """An optional fast path for printing ``$all`` as NDJSON; None (the
        default) means this backend has none, and callers format
        :meth:`read_all`'s events themselves.

        Otherwise: an iterator of ``(data, count)`` pieces, in position
        order, whose concatenation is exactly, byte for byte, the UTF-8 of
        ``json.dumps(ev.to_dict(), ensure_ascii=False) + "\\n"`` for every
        ``ev`` that ``read_all(lo, hi)`` yields (``count`` lines in
        ``data``).  ``hi`` is a committed head (at most :meth:`head` when
        called), ``lo >= 1``.  Nothing is filtered: the front end calls
        this only when no event of the store is removed (deleted, truncated
        or past a retention rule), since what the backend still holds is
        then what is readable.  ``workers``: processes the backend may use
        (None: its choice; 1: the calling process alone).  Constant memory.
        Damage is CorruptStore, as for :meth:`read_all`."""
        return None

    def ndjson_stream(self, stream: str, lo: int = 1,
                      hi: int | None = None) -> Iterator[tuple[bytes, int]] | None:
        """An optional fast path for printing one stream as NDJSON; None
        (the default) means this backend has none, and callers format
        :meth:`read_stream`'s events themselves.

        Otherwise: ``(data, count)`` pieces whose concatenation is exactly
        the UTF-8 of ``json.dumps(ev.to_dict(), ensure_ascii=False) + "\\n"``
        for every ``ev`` that ``read_stream(stream, lo, hi)`` yields, with
        the same errors (StreamNotFound when called; damage as CorruptStore
        after the lines before it).  The front end calls this only when
        nothing of the stream is removed (cut or past a retention rule).
        Constant memory."""
        return None

    def find(self, event_id: str, accept=None) -> RecordedEvent | None:
        """The first event (by position) with this id that ``accept`` (a
        predicate, None: any) accepts, or None.  Ids are unique within a
        batch, not within a store: the front end passes its readability
        check, so that a removed event never hides a readable one with the
        same id.  (Backends with an index on ids override this scan.)"""
        for ev in self.read_all():
            if ev.id == event_id and (accept is None or accept(ev)):
                return ev
        return None

    @abstractmethod
    def streams(self, prefix: str | None = None) -> Iterator[StreamRow]:
        """Every stream with events (and an id starting with ``prefix``),
        sorted by id as Python sorts strings (by code point)."""

    @abstractmethod
    def watcher(self) -> Watcher:
        """A :class:`Watcher` for this store (close it when done)."""

    # -- small documents: snapshots, checkpoints, settings -----------------------------
    @abstractmethod
    def put_snapshot(self, stream: str, version: int, body: bytes) -> None:
        """Store ``body`` as the stream's snapshot at ``version``, replacing
        one already there; readers see the old body or the new, whole."""

    @abstractmethod
    def get_snapshot(self, stream: str, version: int) -> bytes | None:
        ...

    @abstractmethod
    def snapshot_versions(self, stream: str) -> list[int]:
        """The versions with a snapshot, ascending."""

    @abstractmethod
    def delete_snapshot(self, stream: str, version: int) -> bool:
        """Remove one; False when there was none."""

    def get_snapshot_head(self, stream: str, version: int, limit: int) -> bytes | None:
        """The snapshot's first line (at most ``limit`` bytes), or None when
        there is none: the snapshot feature checks a reducer's fingerprint
        without the state.  (A directory reads only that line.)"""
        body = self.get_snapshot(stream, version)
        if body is None:
            return None
        body = bytes(body)
        end = body.find(b"\n")
        return body[:limit] if end < 0 else body[:min(end + 1, limit)]

    def describe_snapshot(self, stream: str, version: int) -> str:
        """How messages name one snapshot (a directory names its file)."""
        return f"in {self.location}"

    def snapshot_count(self) -> int:
        """How many snapshots the store holds (all streams)."""
        return self.stats()["snapshots"]

    @abstractmethod
    def get_checkpoint(self, name: str) -> CheckpointRow | None:
        """The checkpoint ``name``, or None.  CorruptStore (exit 6, naming
        where it is and what to do) when it is damaged."""

    @abstractmethod
    def put_checkpoint(self, row: CheckpointRow) -> None:
        """Replace the checkpoint ``row.name`` atomically (durably when
        ``sync``)."""

    @abstractmethod
    def delete_checkpoint(self, name: str) -> bool:
        ...

    @abstractmethod
    def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint, sorted by name (CorruptStore when one is damaged)."""

    def checkpoint_findings(self) -> tuple[list[CheckpointRow], list[dict]]:
        """Every readable checkpoint (sorted by name), and one problem per
        damaged one, as :meth:`verify` reports them (``severity`` "error",
        ``kind`` "checkpoint", ``message``, and where the backend can say,
        ``file``): for ``info`` and ``verify``, which list the rest.
        Backends whose checkpoints cannot be damaged report none."""
        return self.checkpoints(), []

    def describe_checkpoint(self, name: str, lock: bool = False) -> str:
        """How messages name a checkpoint (``lock``: its consumer's hold);
        a directory names its file."""
        return f"checkpoint {name!r} in {self.location}"

    @abstractmethod
    def hold_checkpoint(self, name: str) -> AbstractContextManager[None]:
        """Be the only consumer of ``name`` until the block ends, without
        waiting: ConsumerBusy when another holder (any process, any
        machine) has it.  The hold ends when its holder dies."""

    @abstractmethod
    def settings(self) -> dict:
        """The store's settings (``{}`` when none were set).  CorruptStore
        (exit 6, naming where they are) when they are damaged."""

    def settings_findings(self) -> list[dict]:
        """Problems with the stored settings, as :meth:`checkpoint_findings`
        reports them (``kind`` "settings"); none by default."""
        return []

    def describe_settings(self) -> str:
        """How messages name the settings (a directory names its file)."""
        return f"the settings in {self.location}"

    @abstractmethod
    def update_settings(self, changes: dict) -> dict:
        """Apply ``changes`` atomically (a None value removes the key; the
        front end has validated them); returns the new settings."""

    # -- forgetting (evstore/core/forgetting.py holds the rules) ------------------------
    @abstractmethod
    def cut(self, stream: str, expected, before: int | None, hard: bool) -> tuple[int, "Cut"]:
        """Delete (``before`` None) or truncate ``stream``.  Under the writer
        lock (the one appends take): read the stream's version V and its
        cut, ask :func:`evstore.core.forgetting.plan_cut`, store the new cut
        durably (unless ``sync`` is False), and return ``(V, new_cut)``.
        The cut is visible to every reader as soon as this returns; an
        append after it sees it (a tombstone refuses the append)."""

    @abstractmethod
    def cuts(self) -> dict[str, "Cut"]:
        """Every stream's cut (streams never cut are absent).  Called once
        per read: cheap when nothing changed (cache it)."""

    def forgetting_state(self) -> tuple[dict[str, "Cut"], list["Retention"]]:
        """``(cuts(), retention_rules())``, what one reader's view needs
        (a backend that can answer both at once overrides this)."""
        return self.cuts(), self.retention_rules()

    @abstractmethod
    def retention_rules(self) -> list["Retention"]:
        """Every retention rule, in no particular order."""

    @abstractmethod
    def set_retention(self, rule: "Retention") -> None:
        """Store ``rule``, replacing the rule for the same target and kind;
        a rule with neither ``max_age_us`` nor ``max_count`` removes it.
        Durable when it returns (unless ``sync`` is False)."""

    @abstractmethod
    def compact(self, view: "Callable[[], Forgetting]", dry_run: bool = False,
                progress=None) -> dict:
        """Remove the bytes of every event that ``view()`` says is not
        readable, and the snapshots of deleted streams at or below their
        ``Cut.deleted``, while writers, readers and followers work.  Ask
        ``view()`` again under the writer lock before each step that makes
        a removal final (rules may change while compaction runs).  Every
        readable event keeps its position, version, id and bytes; a crash
        at any point leaves every readable event readable.  Returns
        ``{"events_removed", "bytes_before", "bytes_after"}`` (``dry_run``:
        what it would remove, nothing changed).  ``progress(done, total)``
        may be called with byte counts."""

    # -- whole-store -------------------------------------------------------------------
    @abstractmethod
    def stats(self) -> dict:
        """``info``'s backend-dependent figures: ``backend``, ``streams``,
        ``events``, ``bytes``, ``segments``, ``snapshots``,
        ``first_recorded_us`` and ``last_recorded_us`` (None when empty)."""

    @abstractmethod
    def verify(self) -> list[dict]:
        """Every problem found, as dicts with ``severity`` ("error" or
        "warning"), ``kind``, ``message`` and, where known, ``stream``,
        ``version``, ``position``.  Empty when sound.  Raises nothing for
        damage it can describe."""

    def close(self) -> None:
        """Release connections and files; the instance is not used again."""


def checkpoint_problems(rows: Iterable[CheckpointRow], head: int,
                        where: Callable[[str], dict] | None = None) -> list[dict]:
    """``verify``'s warnings about readable checkpoints: one without a
    checksum, one past the head (events its consumer saw are gone, e.g.
    after a repair; it will resume at the head).  ``where(name)`` adds
    where each is (a file).  One rule for every backend."""
    out = []
    for cp in rows:
        at = where(cp.name) if where is not None else {}
        if not cp.sealed:
            out.append({"severity": "warning", "kind": "checkpoint", **at,
                        "message": f"checkpoint {cp.name!r} has no checksum (written by an "
                                   "older evstore); its consumer's next save adds one"})
        if cp.position > head:
            out.append({"severity": "warning", "kind": "checkpoint", **at,
                        "position": cp.position,
                        "message": f"checkpoint {cp.name!r} is at position {cp.position}, past "
                                   f"the store's head ({head}); its consumer will resume at "
                                   "the head"})
    return out


def merge_settings(current: dict, changes: dict) -> dict:
    """The settings after ``changes`` (None removes a key): one rule for
    every backend's :meth:`Backend.update_settings`."""
    out = dict(current)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


class DenseCheck:
    """Feeds on events in position order and collects what breaks the
    store's invariants: positions 1..n without a gap, each stream's
    versions 1..m, commit times never going back.  Shared by backends'
    :meth:`Backend.verify` so each checks the same things."""

    def __init__(self):
        self.problems: list[dict] = []
        self.position = 0
        self.versions: dict[str, int] = {}
        self.last_us = 0

    def add(self, stream: str, version: int, position: int, recorded_us: int) -> None:
        if position != self.position + 1:
            self.problem("positions", f"position {position} follows {self.position}",
                         position=position)
        self.position = position
        want = self.versions.get(stream, 0) + 1
        if version != want:
            self.problem("versions", f"version {version} where {want} was due",
                         stream=stream, version=version, position=position)
        self.versions[stream] = version
        self.last_us = max(self.last_us, recorded_us)

    def problem(self, kind: str, message: str, severity: str = "error", **where) -> None:
        self.problems.append({"severity": severity, "kind": kind, "message": message, **where})
