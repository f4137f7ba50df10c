"""The file backend's writer session: taking the writer lock, checking what a
crash or another writer left (the commit log's torn tail, ``sync-state``,
``fsync-failed``, the generation), reconciling the stream logs after a
reboot, and keeping them synced.

Every write (append, bulk import, cut, compaction) runs inside
``_writing``; keeping it apart from appending and reading shows what a
writer must establish before it may write.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from ...disk import recovery
from ...disk.commitlog import CommitLog
from ...disk.records import GAP, is_gap
from ...disk.streamlog import StreamLog, StreamTail
from ...disk.streamwalk import COMMITTED, INSIDE_BATCH, NOT_COMMITTED
from ...errors import CorruptStore, DurabilityError, StoreIOError, UsageError
from . import journal
from .names import LOG_DIR, STREAMS_DIR
from .reading import _CATCH_UP

class FileWriterSession:
    """Mixed into :class:`evstore.backends.files.engine.FileBackend`."""

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
                    torn = log.tail_is_torn(rebooted)
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
