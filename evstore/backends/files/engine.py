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
import threading
import time
import weakref
from contextlib import contextmanager

from ...disk.commitlog import CommitLog, SealSyncError
from ...plain import path_str  # not pathlib: start-up time (see there)
from ...errors import (
    CorruptStore,
    DurabilityError,
    EvstoreError,
    StoreIOError,
    StoreLocked,
    StoreNotFound,
    UsageError,
)
from ...disk.format import FORMAT_VERSION, LOG_MAGIC, STREAM_MAGIC, encode_frame, encode_frame_parts
from .checkpoints import FileCheckpoints
from .documents import FileSnapshots
from . import journal
from .forget import ForgetDocuments
from .settings import FileSettings
from .locking import WriterLock
from ...disk.records import log_payload_parts, stream_payload
from ...model import AppendResult, check_stream_id
from ...disk import recovery
from ...disk.segment import fsync_dir, read_small
from ...disk.streamlog import StaleTail, StreamLog, StreamTail
from .catalogue import FileCatalogue
from .reading import FileReading
from .session import FileWriterSession
from ...core import rules
from ...core.backend import Appended, Backend, BulkSession
from ...core.forgetting import Cut, Retention, check_append, plan_cut
from .names import LOCK_FILE, LOG_DIR, MARKER, STREAMS_DIR

#: Stream logs are fsynced (and ``sync-state`` advanced) at least this often,
#: bounding how much of the commit log a reboot makes us replay.
SYNC_STREAMS_EVERY = 32 * 1024 * 1024


def _now_us() -> int:
    return time.time_ns() // 1000


class FileBackend(FileWriterSession, FileReading, FileCatalogue, FileSnapshots, FileCheckpoints,
                  FileSettings, Backend):
    """An event store in a directory.

    ``FileBackend(path)`` creates the store when it is absent (``create=False``
    raises StoreNotFound instead).  Many processes and threads may open the
    same store; writers serialise on the writer lock, readers never wait.
    """

    kind = "files"

    def __init__(self, path, *, sync: bool = True, segment_bytes: int = 64 * 1024 * 1024,
                 lock_timeout: float = 30.0, create: bool = True):
        self._dir = path_str(path)
        self.sync = sync
        if segment_bytes < 1:
            raise UsageError("segment_bytes must be positive")
        self.segment_bytes = segment_bytes
        self.lock_timeout = lock_timeout
        self.location = self._dir
        self._closed = False
        self._snapshots = None
        try:
            self._open(create)
        except OSError as e:
            raise StoreIOError(f"cannot open store {self._dir}: {e.strerror or e}") from e

    @property
    def path(self):
        """The store's directory, a ``pathlib.Path``; made when asked
        (pathlib costs a short command ~4 ms of start-up)."""
        from pathlib import Path

        return Path(self._dir)

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
        self._generation = journal.generation(self._dir)
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
                import shutil  # here: it brings bz2 and lzma, only a failed create needs it

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
        ident = journal.generation(self._dir)
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

    # -- appending ---------------------------------------------------------------------------
    def _sync_log(self, created: bool) -> None:
        """The one fsync of a durable append.  After it fails once this store
        never claims durability again (docs/FORMAT.md, "fsync errors")."""
        try:
            self._wlog._writer.sync()
            if created:
                fsync_dir(self._wlog.dir)
        except OSError as e:
            self._poison(f"fsync of the commit log failed at position {self._wlog.tail.head}", e)

    def append(self, stream: str, events, expected) -> Appended:
        """:meth:`Backend.append`.  ``events`` is a sequence of Prepared (the
        front end passes its packed batch, :class:`~evstore.model.PackedEvents`:
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
