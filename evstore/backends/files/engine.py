"""FileBackend: a store in a directory -- streams, versions, positions, locking, durability.

The file backend behind :class:`evstore.core.backend.Backend`; the rules every
backend shares (validation, the expected-version rule, filters, snapshots on a
schedule) are the front end's (:mod:`evstore.core.store`) and :mod:`evstore.core.rules`.

The commit point of an append is its frame in the commit log
(:mod:`evstore.disk.commitlog`); the stream logs (:mod:`evstore.disk.streamlog`) are
copies laid out per aggregate.  One append, under the writer lock:

1. check the expected version against the stream's committed tail;
2. write the events' records to the stream log (not yet visible: readers
   trust a stream only up to records the commit log confirms);
3. write one batch frame to the commit log -- the commit;
4. ``fdatasync`` the commit-log segment (plus its directory when the segment
   is new), then report success.

So a durable append costs one fsync.  docs/FORMAT.md gives the reasoning for
every crash point.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import weakref
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ...disk.commitlog import CommitLog, SealSyncError
from ...errors import (
    CorruptStore,
    DamagedCopyWarning,
    DurabilityError,
    EvstoreError,
    StoreIOError,
    StoreLocked,
    StoreNotFound,
    StreamNotFound,
    UsageError,
)
from ...disk.format import FORMAT_VERSION, LOG_MAGIC, STREAM_MAGIC, encode_frame, encode_frame_parts
from .checkpoints import FileCheckpoints
from .documents import FileSnapshots
from . import journal
from .forget import ForgetDocuments
from .settings import FileSettings
from .locking import WriterLock
from ...disk.records import (
    GAP,
    AppendResult,
    is_gap,
    RecordedEvent,
    check_stream_id,
    log_payload_parts,
    stream_payload,
)
from ...disk import recovery
from ...disk.segment import fsync_dir, is_dir as _is_dir, listdir as listdir_nofollow, read_small
from ...disk.streamlog import (
    COMMITTED, INSIDE_BATCH, NOT_COMMITTED, StaleTail, StreamLog, StreamTail,
)

# How many positions EventStore.version catches up on through the commit
# log's batch heads before it asks the stream log afresh.
_CATCH_UP = 256

from ...core import rules
from ...core.backend import Appended, Backend, BulkSession, StreamRow
from ...core.forgetting import Cut, Retention, check_append, plan_cut
from .names import (  # noqa: F401  (FSYNC_FAILED: a name tests use)
    CHECKPOINTS_DIR, FSYNC_FAILED, ID_FILE, LOCK_FILE, LOG_DIR, LOG_IDX, LOG_SEG, MARKER,
    QUARANTINE, SNAPSHOT_SUFFIX, SNAPSHOTS_DIR, STREAM_IDX, STREAM_SEG, STREAMS_DIR,
)

#: Stream logs are fsynced (and ``sync-state`` advanced) at least this often,
#: bounding how much of the commit log a reboot makes us replay.
SYNC_STREAMS_EVERY = 32 * 1024 * 1024


def _now_us() -> int:
    return time.time_ns() // 1000


class FileBackend(FileSnapshots, FileCheckpoints, FileSettings, Backend):
    """An event store in a directory.

    ``FileBackend(path)`` creates the store when it is absent (``create=False``
    raises StoreNotFound instead).  Many processes and threads may open the
    same store; writers serialise on the writer lock, readers never wait.
    """

    kind = "files"

    def __init__(self, path, *, sync: bool = True, segment_bytes: int = 64 * 1024 * 1024,
                 lock_timeout: float = 30.0, create: bool = True):
        self.path = Path(path)
        self.sync = sync
        if segment_bytes < 1:
            raise UsageError("segment_bytes must be positive")
        self.segment_bytes = segment_bytes
        self.lock_timeout = lock_timeout
        self._dir = str(self.path)
        self.location = self._dir
        self._closed = False
        self._snapshots = None
        try:
            self._open(create)
        except OSError as e:
            raise StoreIOError(f"cannot open store {self._dir}: {e.strerror or e}") from e

    # -- opening ----------------------------------------------------------------
    def _open(self, create: bool) -> None:
        marker = os.path.join(self._dir, MARKER)
        if not os.path.isfile(marker):
            if not create:
                raise StoreNotFound(self._dir)
            self._create()
        else:
            self._check_marker(marker)
        self._marker = marker
        self._forget = ForgetDocuments(self._dir)
        self._generation = _identity(marker)
        self._gen = 0
        self._lock = WriterLock(os.path.join(self._dir, LOCK_FILE), self.lock_timeout)
        self._wlog = CommitLog(os.path.join(self._dir, LOG_DIR))
        self._local = threading.local()
        self._wstreams: dict[str, StreamLog] = {}
        self._wtails: dict[str, StreamTail] = {}
        #: the head as this handle left it after its last write: when the log
        #: has moved past it, another process wrote and cached tails are stale
        self._own_head = -1
        self._wrote = False
        self._boot = recovery.current_boot_id()
        self._state_checked = False
        self._synced_to = None
        self._failed: str | None = None
        self._wgen = 0
        if journal.pending(self._dir):
            try:
                with self._writing(timeout=0):
                    pass  # finishes the interrupted compaction step
            except (StoreLocked, StoreIOError, DurabilityError):
                pass  # the lock holder (or the next writer) finishes it
        log = self._reader_log()
        log.refresh()
        self._reconcile_if_rebooted(log.tail.head)

    def _create(self) -> None:
        """Build the store in a sibling directory and rename it into place, so
        that a concurrent opener sees no store or a whole one, never half of
        one (a half-made directory would be 'not an evstore store')."""
        d = self._dir
        if os.path.isdir(d) and os.listdir(d):
            raise UsageError(
                f"{d} exists and is not an evstore store (no {MARKER}); "
                "choose an empty or new directory"
            )
        parent = os.path.dirname(os.path.abspath(d))
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(d))}"
                                   f".creating-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(tmp)
        try:
            for sub in (LOG_DIR, STREAMS_DIR):
                os.mkdir(os.path.join(tmp, sub))
            recovery.write_atomic(os.path.join(tmp, MARKER), json.dumps(
                {"format": "evstore", "format_version": FORMAT_VERSION}, indent=1).encode() + b"\n")
            try:
                os.rename(tmp, d)  # replaces d only when it is an empty directory
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if not os.path.isfile(os.path.join(d, MARKER)):  # not another creator's
                    raise UsageError(
                        f"{d} exists and is not an evstore store (no {MARKER}); "
                        "choose an empty or new directory") from None
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(parent)

    def _check_marker(self, marker: str) -> None:
        try:
            meta = json.loads(read_small(marker, 1 << 16))
            version = meta["format_version"]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptStore(f"{marker}: unreadable store marker ({e})") from None
        if version != FORMAT_VERSION:
            raise CorruptStore(
                f"{marker}: format version {version}, this evstore reads {FORMAT_VERSION}"
            )
        for sub in (LOG_DIR, STREAMS_DIR):
            if not os.path.isdir(os.path.join(self._dir, sub)):
                raise CorruptStore(f"{self._dir}: the {sub}/ directory is missing")

    def _reader_log(self) -> CommitLog:
        self._check_generation()
        local = self._local
        log = getattr(local, "log", None)
        if log is None or local.gen != self._gen:
            # The old log is not closed here: a read of this thread may still
            # be iterating over it (a compaction bumps the generation while a
            # follower reads).  It closes its files when the last reference
            # goes (CommitLog.__del__), or at close().
            log = CommitLog(os.path.join(self._dir, LOG_DIR))
            local.log, local.gen = log, self._gen
            logs = self.__dict__.setdefault("_local_logs", weakref.WeakSet())
            logs.add(log)
        return log

    def _check_generation(self) -> None:
        """Notice a repair that rewrote files under this open handle.

        Repair replaces ``evstore.json`` whenever it changes anything; a new
        identity of that file means cached file descriptors, indexes and tails
        may describe files that are gone, so every cache is dropped (the
        writer's under the lock, each reader thread's on its next call)."""
        ident = _identity(self._marker)
        if ident != self._generation:
            self._generation = ident
            self._gen += 1

    def close(self) -> None:
        """Make stream logs durable up to here (bounding recovery after a
        power loss) and release every file."""
        if self._closed:
            return
        try:
            if self._wrote and self.sync and not self._failed:
                try:
                    with self._lock.hold(self.lock_timeout):
                        self._sync_streams_locked()
                except DurabilityError:
                    raise  # an fsync failed: say so (the store now refuses writes)
                except (EvstoreError, OSError):
                    # Only bounds reboot recovery; never worth failing close.
                    # (A failed fsync of the stream logs was turned into
                    # DurabilityError above; an OSError here is a read of
                    # the log or the write of sync-state, which is left as it
                    # was: recovery then rechecks more, never less.)
                    pass
        finally:
            self._closed = True
            self._lock.close()
            self._wlog.close()
            for log in list(getattr(self, "_local_logs", ())):
                log.close()
            for sl in self._wstreams.values():
                sl.close()
            self._wstreams.clear()

    def __enter__(self) -> "FileBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the writer's session -------------------------------------------------------------
    @contextmanager
    def _writing(self, timeout: float | None = None):
        if self._closed:
            raise UsageError("the store is closed")
        self._check_failed()
        with self._lock.hold(self.lock_timeout if timeout is None else timeout):
            try:
                self._check_generation()
                if journal.pending(self._dir):
                    # a compaction step was interrupted: finish it before
                    # anything else reads or writes the files it moves
                    journal.finish(self._dir)
                    self._check_generation()
                if self._wgen != self._gen:
                    self._reset_writer_caches()
                log = self._wlog
                log.refresh()
                if log.tail.head != self._own_head:
                    self._forget_tails_since(log)
                if log.tail.trailing:
                    boot, synced = recovery.load_state(self._dir)
                    rebooted = self._boot is not None and boot != self._boot
                    torn = log.tail.trailing == "short" or (rebooted and log.tail_torn_by_power_cut())
                    if not torn or synced > log.tail.head:
                        # Not a torn append: a killed writer leaves a *short*
                        # frame, a power cut pages of zeros.  A damaged frame
                        # may be an acknowledged batch, which repair can
                        # restore from the stream logs.  Never cut it.
                        raise CorruptStore(
                            f"the commit log has {log.tail.trailing} bytes after position "
                            f"{log.tail.head} ({log.tail.trailing_reason}); run "
                            "'evstore verify' for a report and 'evstore repair' to fix it")
                    recovery.cut_log_tail(self._dir, log)
                    recovery.fix_log_index(log)
                    self._wtails.clear()
                if not self._state_checked:
                    self._check_state_locked()
                yield log
            except OSError as e:
                raise StoreIOError(f"I/O error in {self._dir}: {e.strerror or e}") from e

    def _forget_tails_since(self, log: CommitLog) -> None:
        """Other writers committed since our last commit: forget the cached
        tails of the streams they wrote to, keep the others (a commit only
        moves its own stream's tail)."""
        own, head = self._own_head, log.tail.head
        if own < 0 or not own < head <= own + _CATCH_UP:
            self._wtails.clear()
        elif self._wtails:
            for stream, *_ in log.batch_heads_from(own + 1):
                self._wtails.pop(stream, None)
        self._own_head = head

    def _reset_writer_caches(self) -> None:
        self._wlog.close()
        self._wlog = CommitLog(os.path.join(self._dir, LOG_DIR))
        for sl in self._wstreams.values():
            sl.close()
        self._wstreams.clear()
        self._wtails.clear()
        self._own_head = -1
        self._state_checked = False
        self._wgen = self._gen

    def _check_failed(self) -> None:
        if self._failed is None:
            self._failed = recovery.read_failed_flag(self._dir)
        if self._failed:
            raise DurabilityError(
                f"refusing to write: {self._failed}. Check the disk, then run "
                "'evstore verify' and 'evstore repair' (which clears this)"
            )

    def _sync_log(self, created: bool) -> None:
        """The one fsync of a durable append.  After it fails once this store
        never claims durability again (docs/FORMAT.md, "fsync errors")."""
        try:
            self._wlog._writer.sync()
            if created:
                fsync_dir(self._wlog.dir)
        except OSError as e:
            self._poison(f"fsync of the commit log failed at position {self._wlog.tail.head}", e)

    def _poison(self, what: str, e: OSError):
        """Record a failed fsync for every process (``fsync-failed``) and
        raise.  The kernel may have dropped the dirty pages it could not
        write, so a later fsync that succeeds proves nothing about them."""
        self._failed = f"{what} ({e.strerror or e})"
        recovery.write_failed_flag(self._dir, self._failed)
        raise DurabilityError(self._failed + "; the last append may not be durable") from e

    def _is_committed(self, log: CommitLog, stream: str):
        head = log.tail.head

        def check(version: int, position: int) -> int:
            if position < 1 or position > head:
                return NOT_COMMITTED
            s, fv, fp, _, n = log.head_of_batch(position)
            if s != stream or not fp <= position < fp + n or version - fv != position - fp:
                return NOT_COMMITTED
            return COMMITTED if position == fp + n - 1 else INSIDE_BATCH

        check.head = head
        return check

    def _stream_tail_locked(self, stream: str) -> tuple[StreamLog, StreamTail]:
        log = self._wlog
        sl = self._wstreams.get(stream)
        if sl is None:
            if len(self._wstreams) > 256:
                for old in self._wstreams.values():
                    old.close()
                self._wstreams.clear()
                self._wtails.clear()
            sl = self._wstreams[stream] = StreamLog(os.path.join(self._dir, STREAMS_DIR), stream)
        cached = self._wtails.get(stream)
        if cached is not None:
            return sl, cached
        sl.check_id()
        tail = sl.tail(self._is_committed(log, stream))
        if tail.cut_from is not None:
            if self._committed_past(log, stream, tail) is not None:
                raise CorruptStore(
                    f"stream {stream!r}: its log is damaged after version {tail.version}, "
                    "where the commit log holds later events of it; run 'evstore verify' "
                    "for a report and 'evstore repair' to fix it")
            sl.cut(tail, lambda path, off, data: recovery.quarantine(
                self._dir, path, off, data, f"stream log: {tail.cut_reason}"))
            tail.cut_from, tail.cut_reason = None, ""
        if tail.version == 0:
            tail = self._tail_of_removed(stream, tail)
        self._wtails[stream] = tail
        return sl, tail

    def _tail_of_removed(self, stream: str, tail: StreamTail) -> StreamTail:
        """A stream with no record left may have had events that compaction
        removed: its cut keeps its version (the next event is floor), so the
        tail says that version, at no segment."""
        cut = self._forget.cuts.get().get(stream)
        if cut is not None and cut.floor > 1:
            return StreamTail(version=cut.floor - 1)
        return tail

    def _check_state_locked(self) -> None:
        boot, synced = recovery.load_state(self._dir)
        head = self._wlog.tail.head
        if boot != self._boot or self._boot is None:
            if self._boot is not None:
                # A reboot (or a store whose sync-state is gone): the last
                # commit-log index was never synced; rebuild it once.
                recovery.fix_log_index(self._wlog, rebuild=True)
            if synced < head:
                self._reconcile_locked(synced)
                synced = head
            recovery.save_state(self._dir, self._boot, synced)
        self._synced_to = synced
        self._state_checked = True

    def _reconcile_if_rebooted(self, head: int) -> None:
        if head == 0:
            return
        boot, synced = recovery.load_state(self._dir)
        if (boot == self._boot and boot is not None) or synced >= head:
            # Nothing to replay: a reader needs no lock (the store may be on
            # read-only media); the first writer rebuilds the log's index.
            return
        with self._writing():
            pass  # _writing runs _check_state_locked

    def _reconcile_locked(self, synced: int) -> None:
        """After a power cut: make the stream logs agree with the commit log
        from ``synced`` on (docs/FORMAT.md, "Power loss").  Stream logs are
        opened a few at a time: a reboot may have thousands to check."""
        log = self._wlog
        root = os.path.join(self._dir, STREAMS_DIR)
        for sl in self._wstreams.values():
            sl.close()
        self._wstreams.clear()
        self._wtails.clear()
        touched = self._touched_since(log, synced)
        for stream, low in touched.items():
            sl = StreamLog(root, stream)
            try:
                sl.create()  # puts back an id a power cut lost or cut short
                sl.recheck_from(low, self._is_committed(log, stream), lambda path, off, data:
                                recovery.quarantine(self._dir, path, off, data,
                                                    "stream log after a power cut"))
            finally:
                sl.close()
        open_logs: dict[str, StreamLog] = {}
        try:
            for batch in log.batches(synced + 1, log.tail.head):
                if is_gap(batch):
                    continue  # positions compaction removed: no stream holds them
                sl = open_logs.get(batch.stream)
                if sl is None:
                    if len(open_logs) >= 64:
                        for old in open_logs.values():
                            old.close()
                        open_logs.clear()
                    sl = open_logs[batch.stream] = StreamLog(root, batch.stream)
                recovery.materialize(sl, batch, self._is_committed(log, batch.stream),
                                     self.segment_bytes)
        finally:
            for sl in open_logs.values():
                sl.close()
        self._sync_stream_logs(touched)

    def _sync_streams_locked(self) -> None:
        """fsync the stream logs written since ``sync-state`` and advance it."""
        log = self._wlog
        log.refresh()
        boot, synced = recovery.load_state(self._dir)
        head = log.tail.head
        if synced >= head:
            return
        self._sync_stream_logs(self._touched_since(log, synced))
        recovery.save_state(self._dir, self._boot, head)
        self._synced_to = head

    @staticmethod
    def _touched_since(log: CommitLog, synced: int) -> dict[str, int]:
        """The streams written after position ``synced``, with the first
        version written to each."""
        touched: dict[str, int] = {}
        for stream, fv, _fp, _us, _n in log.batch_heads_from(synced + 1):
            if stream != GAP:
                touched.setdefault(stream, fv)
        return touched

    def _sync_stream_logs(self, touched: dict[str, int]) -> None:
        root = os.path.join(self._dir, STREAMS_DIR)
        try:
            recovery.sync_streams((StreamLog(root, s), v) for s, v in touched.items())
        except OSError as e:
            # Dirty pages the kernel could not write may be gone: sync-state
            # must never claim them, and no later fsync can prove them.
            self._poison("fsync of the stream logs failed", e)

    # -- appending ---------------------------------------------------------------------------
    def append(self, stream: str, events, expected) -> Appended:
        """:meth:`Backend.append`.  ``events`` is a sequence of Prepared (the
        front end passes its packed batch, :class:`~evstore.disk.records.PackedEvents`:
        ``blobs`` then streams the packed bytes and ``own_ids`` False says
        every id was made here, so no stored event can carry one)."""
        blobs = getattr(events, "blobs", None)
        if blobs is None:
            blobs = [e.blob for e in events]
        own_ids = getattr(events, "own_ids", True)
        with self._writing() as log:
            check_append(self._forget.cuts.get().get(stream), stream)
            sl, tail = self._stream_tail_locked(stream)
            current = tail.version
            window = rules.retry_window(expected, current, len(events)) if own_ids else None
            if window is not None:  # compaction may have removed the window's start
                window = (max(window[0], sl.first_version(tail)), window[1])
            stored = [] if window is None else [
                rules.Stored(r.id, r.version, r.position)
                for r in sl.records(tail, window[0], window[1])]
            verdict = rules.decide(stream, expected, current,
                                   [e.id for e in events] if stored else (), stored)
            if verdict is not None:
                return Appended(AppendResult(stream, *verdict), False, -1)
            us = max(_now_us(), log.tail.last_recorded_us)
            return Appended(self._write_locked(log, sl, tail, stream, blobs, us), True, current)

    def _write_locked(self, log, sl, tail, stream, blobs, us, sync=None) -> AppendResult:
        """Write one checked batch: stream records, then the commit frame.
        ``sync`` (default: the store's setting) fsyncs the commit log.  Once
        the commit frame is written the batch is committed, so the work that
        may fail for other reasons (syncing the stream logs) comes first."""
        if self.sync and self._synced_to is not None and (
                log.tail.head - self._synced_to) * 64 >= SYNC_STREAMS_EVERY:
            self._sync_streams_locked()
        first_position = log.tail.head + 1
        first_version = tail.version + 1
        # stream records made as they are written (StreamLog.append), not all at once
        frames = (encode_frame(STREAM_MAGIC, stream_payload(first_version + i, first_position + i, us, b))
                  for i, b in enumerate(blobs))
        frame = encode_frame_parts(LOG_MAGIC, log_payload_parts(
            stream, first_version, first_position, us, blobs))
        sl.create()
        try:
            new_tail = sl.append(tail, frames, self.segment_bytes)
        except StaleTail:
            # Another writer died after its stream records, before its commit
            # frame: find the committed tail again (cutting those records).
            # Its version cannot differ: only a commit moves it.
            self._wtails.pop(stream, None)
            sl, tail = self._stream_tail_locked(stream)
            if tail.version != first_version - 1:  # pragma: no cover - a bug, not a race
                raise CorruptStore(f"stream {stream!r}: its tail moved without a commit")
            new_tail = sl.append(tail, frames, self.segment_bytes)
        try:
            created = log.commit(frame, first_position, len(blobs), us, self.segment_bytes)
        except SealSyncError as e:
            self._poison(f"fsync of the commit-log segment {e.filename} failed while rolling "
                         f"to position {first_position}", e)
        self._wrote = True
        self._own_head = log.tail.head
        if self.sync if sync is None else sync:
            self._sync_log(created)
        new_tail.position, new_tail.recorded_us = log.tail.head, us
        self._wtails[stream] = new_tail
        return AppendResult(stream, new_tail.version, log.tail.head, len(blobs))

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

    # -- forgetting (the rules: evstore/core/forgetting.py) -----------------------------------
    def cuts(self) -> dict[str, Cut]:
        """:meth:`Backend.cuts`: one ``stat`` when nothing changed.  The
        dict is shared: callers must not change it."""
        return self._forget.cuts.get()

    def retention_rules(self) -> list[Retention]:
        return list(self._forget.rules.get())

    def cut(self, stream: str, expected, before: int | None, hard: bool) -> tuple[int, Cut]:
        """:meth:`Backend.cut`, under the writer lock."""
        check_stream_id(stream)
        with self._writing():
            cuts = dict(self._forget.cuts.get())
            old = cuts.get(stream)
            version = self._stream_tail_locked(stream)[1].version
            new = plan_cut(old, stream, version, expected, before, hard)
            if new != old:
                cuts[stream] = new
                self._forget.put_cuts(cuts, self.sync)
            return version, new

    def set_retention(self, rule: Retention) -> None:
        """:meth:`Backend.set_retention`, under the writer lock."""
        with self._writing():
            rules_now = [r for r in self._forget.rules.get()
                         if (r.target, r.prefix) != (rule.target, rule.prefix)]
            if rule.max_age_us is not None or rule.max_count is not None:
                rules_now.append(rule)
            self._forget.put_rules(rules_now, self.sync)

    def compact(self, view, dry_run: bool = False, progress=None) -> dict:
        """:meth:`Backend.compact` (:mod:`evstore.backends.files.compaction`)."""
        from .compaction import compact
        return compact(self, view, dry_run, progress)

    # -- the stream catalogue -------------------------------------------------------------------
    def streams(self, prefix: str | None = None) -> Iterator[StreamRow]:
        """:meth:`Backend.streams` (``first_recorded_us`` None when the
        stream's first record cannot be read)."""
        log = self._reader_log()
        log.refresh()
        root = os.path.join(self._dir, STREAMS_DIR)
        found = []
        for shard in sorted(listdir_nofollow(root)):
            sdir = os.path.join(root, shard)
            if shard.startswith(".") or not _is_dir(sdir):
                continue
            for key in os.listdir(sdir):
                if key.startswith(".") or not _is_dir(os.path.join(sdir, key)):
                    continue
                try:
                    sid = read_small(os.path.join(sdir, key, ID_FILE)).decode("utf-8")
                except (OSError, UnicodeDecodeError, CorruptStore):
                    continue
                if prefix is None or sid.startswith(prefix):
                    found.append(sid)
        for sid in sorted(found):
            sl = StreamLog(root, sid)
            try:
                tail = sl.tail(self._is_committed(log, sid))
                if tail.version == 0:
                    continue
                first = sl.first_record()
                yield StreamRow(sid, tail.version, first[1] if first else None, tail.recorded_us)
            finally:
                sl.close()

    def stats(self, per_stream: bool = False) -> dict:
        """:meth:`Backend.stats`, and what operators of a directory watch:
        bytes by kind of file, leftovers (temp and quarantined files), the
        fsync-failure flag, checkpoints and how far behind the head they are,
        and with ``per_stream`` one row per stream (events, bytes, segments,
        snapshots).  Reads directory entries and a few records, never events."""
        log = self._reader_log()
        log.refresh()
        head = log.tail.head
        kinds = {"log": 0, "log_index": 0, "streams": 0, "stream_index": 0,
                 "snapshots": 0, "checkpoints": 0, "quarantine": 0, "other": 0}
        counts = {"log_segments": 0, "stream_segments": 0, "snapshots": 0,
                  "quarantined_files": 0, "temp_files": 0, "streams": 0}
        rows: dict[str, dict] = {}  # stream key -> per-stream figures
        for root, dirs, files in os.walk(self._dir):
            rel = os.path.relpath(root, self._dir).split(os.sep)
            top = rel[0] if rel[0] != "." else ""
            for name in dirs:
                if name.startswith(".tmp") or ".creating-" in name:
                    counts["temp_files"] += 1
            dirs[:] = [d for d in dirs if not d.startswith(".tmp")]
            key = rel[2] if len(rel) == 3 and top in (STREAMS_DIR, SNAPSHOTS_DIR) else None
            for name in files:
                try:
                    size = os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
                if name.startswith(".tmp") or name.endswith(".tmp"):
                    counts["temp_files"] += 1
                    kinds["other"] += size
                    continue
                row = None
                if key is not None and per_stream:
                    row = rows.setdefault(key, {"stream": None, "events": 0, "bytes": 0,
                                                "segments": 0, "snapshots": 0})
                    row["bytes"] += size
                if top == LOG_DIR and name.endswith(LOG_SEG):
                    kinds["log"] += size
                    counts["log_segments"] += 1
                elif top == LOG_DIR and name.endswith(LOG_IDX):
                    kinds["log_index"] += size
                elif top == STREAMS_DIR and name.endswith(STREAM_SEG):
                    kinds["streams"] += size
                    counts["stream_segments"] += 1
                    if row is not None:
                        row["segments"] += 1
                elif top == STREAMS_DIR and name.endswith(STREAM_IDX):
                    kinds["stream_index"] += size
                elif top == STREAMS_DIR and name == ID_FILE:
                    kinds["streams"] += size
                    counts["streams"] += 1
                    if row is not None:
                        row["stream"] = os.path.join(root, name)
                elif top == SNAPSHOTS_DIR and name.endswith(SNAPSHOT_SUFFIX):
                    kinds["snapshots"] += size
                    counts["snapshots"] += 1
                    if row is not None:
                        row["snapshots"] += 1
                elif top == CHECKPOINTS_DIR:
                    kinds["checkpoints"] += size
                elif top == QUARANTINE:
                    kinds["quarantine"] += size
                    if name.endswith(".bin"):
                        counts["quarantined_files"] += 1
                else:
                    kinds["other"] += size
        first_us = last_us = None
        if head:
            last_us = log.tail.last_recorded_us
            first_us = log.head_of_batch(1)[3]
        _boot, synced = recovery.load_state(self._dir)
        failed = recovery.read_failed_flag(self._dir)
        out = {
            "backend": self.kind,
            "format_version": FORMAT_VERSION,
            "streams": counts["streams"],
            "events": head,
            "bytes": sum(kinds.values()),
            "segments": counts["log_segments"] + counts["stream_segments"],
            "log_segments": counts["log_segments"],
            "stream_segments": counts["stream_segments"],
            "snapshots": counts["snapshots"],
            "bytes_by_kind": kinds,
            "first_recorded_us": first_us,
            "last_recorded_us": last_us,
            "synced_position": min(synced, head),
            "quarantined_files": counts["quarantined_files"],
            "temp_files": counts["temp_files"],
            "fsync_failed": failed,
        }
        if per_stream:
            out["per_stream"] = self._stream_rows(log, rows)
        return out

    def _stream_rows(self, log: CommitLog, rows: dict) -> list[dict]:
        """Rows keyed by stream key (stream and snapshot directories share
        it) -> one per stream id; keys without an id file are skipped."""
        by_id: dict[str, dict] = {}
        for row in rows.values():
            if row["stream"] is None:
                continue
            try:
                sid = read_small(row["stream"]).decode("utf-8")
            except (OSError, UnicodeDecodeError, CorruptStore):
                continue
            row["stream"] = sid
            sl = StreamLog(os.path.join(self._dir, STREAMS_DIR), sid)
            try:
                row["events"] = sl.tail(self._is_committed(log, sid)).version
            except CorruptStore:
                row["events"] = None
            finally:
                sl.close()
            by_id[sid] = row
        return [by_id[k] for k in sorted(by_id)]

    # -- for features and operations -----------------------------------------------------------
    @property
    def directory(self) -> str:
        return self._dir

    @contextmanager
    def bulk_writer(self, timeout: float | None = None):
        """Hold the writer lock and write many pre-recorded batches through a
        :class:`~evstore.backends.files.bulk.BulkWriter` (import).  Nothing is fsynced until
        the caller says so (``sync()``/``finish()``)."""
        from .bulk import BulkWriter
        with self._writing(timeout) as log:
            yield BulkWriter(self, log)

    @contextmanager
    def bulk(self, timeout: float | None = None):
        """:meth:`Backend.bulk`: a :class:`FileBulk` over :meth:`bulk_writer`."""
        with self.bulk_writer(timeout) as w:
            yield FileBulk(w)

    def watcher(self):
        from .watch import FileWatcher
        return FileWatcher(self)

    def verify(self, **kw) -> list[dict]:
        from ...ops import verify
        report = verify(self, **kw)
        return [dict(p) for p in getattr(report, "problems", [])]

    @contextmanager
    def writer_lock(self, timeout: float | None = None):
        """Hold the writer lock (for operations such as repair and import)."""
        with self._writing(timeout) as log:
            yield log


def _no_hint(e: Exception) -> str:
    """An error's message without its "; run 'evstore verify' ..." advice
    (a message that quotes it gives that advice once, at its end)."""
    return str(e).split("; run 'evstore", 1)[0]


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_dev, st.st_mtime_ns


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


class FileBulk(BulkSession):
    """:class:`~evstore.core.backend.BulkSession` over a :class:`~.bulk.BulkWriter`."""

    keeps_gaps = True  # gap frames and floors (bulk.BulkWriter._gap, _version_gap)

    def __init__(self, writer):
        self._w = writer

    @property
    def head(self) -> int:
        return self._w.head

    def version(self, stream: str) -> int:
        return self._w.version(stream)

    @property
    def last_recorded_us(self) -> int:
        """The store's last commit time (under the writer lock)."""
        return self._w._log.tail.last_recorded_us

    def write(self, stream, first_version, first_position, recorded_us, blobs) -> AppendResult:
        renumber = first_position is None
        return self._w.write(stream, first_version,
                             self._w.head + 1 if renumber else first_position,
                             recorded_us, blobs, any_time=renumber)

    def sync(self) -> None:
        self._w.sync()

    def finish(self) -> None:
        self._w.finish()
