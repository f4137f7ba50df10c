"""Bulk writing of batches recorded elsewhere (import, restore).

An import writes thousands of batches whose versions, positions and commit
times are already fixed.  Taking the writer lock and fsyncing once per batch
would make it as slow as that many appends; :class:`BulkWriter` holds the lock
for the whole run, writes each batch with the store's own write step and
fsyncs the commit log only when asked (``sync()``), so the caller chooses how
many events one fsync covers.  A crash in the middle leaves a store that holds
a prefix of the batches: every batch is still committed by its own frame.
"""
from __future__ import annotations

import os

from ...core.forgetting import check_append
from ...errors import InvalidEvent
from ...disk.records import AppendResult, check_stream_id
from ...disk.segment import fsync_dir, fsync_file


class BulkWriter:
    """Made by :meth:`FileBackend.bulk_writer`, valid while the lock is held."""

    def __init__(self, store, log):
        self._store = store
        self._log = log
        self._touched: set[int] = {log.tail.seg_first}
        self._created = False
        self.unsynced = 0  #: events written since the last sync()

    @property
    def head(self) -> int:
        """The store's last position."""
        return self._log.tail.head

    def version(self, stream: str) -> int:
        return self._store._stream_tail_locked(stream)[1].version

    def write(self, stream: str, first_version: int, first_position: int,
              recorded_us: int, blobs: list[bytes], any_time: bool = False) -> AppendResult:
        """Write one batch of packed events (``records.pack_fields``).

        Refused with InvalidEvent, nothing written, unless it continues
        exactly what the store holds and is not older than its last commit
        (``any_time``: not older than the stream's last event -- a merge
        keeps each event's own time, so the commit log may go back in time
        where one store's events follow another's).
        """
        check_stream_id(stream)
        store, log = self._store, self._log
        check_append(store._forget.cuts.get().get(stream), stream)
        sl, tail = store._stream_tail_locked(stream)
        if first_position != log.tail.head + 1 or first_version != tail.version + 1:
            raise InvalidEvent(
                f"stream {stream!r}: version {first_version} at position {first_position} "
                f"does not continue the store (stream version {tail.version}, "
                f"last position {log.tail.head})")
        if recorded_us < (tail.recorded_us if any_time else log.tail.last_recorded_us):
            raise InvalidEvent(f"position {first_position}: recorded_at is earlier than "
                               "the " + ("stream's last event" if any_time else
                                         "store's last commit"))
        before = log.tail.seg_first
        result = store._write_locked(log, sl, tail, stream, blobs, recorded_us, sync=False)
        if log.tail.seg_first != before:
            self._touched.add(log.tail.seg_first)
            self._created = True
        self.unsynced += len(blobs)
        return result

    def sync(self) -> None:
        """fsync the commit-log segments written since the last sync (and
        the log directory when segments were created).  A failure poisons
        the store as a failed append's fsync does.  Nothing written since
        the last sync: nothing to sync (an empty store may not even have a
        first log segment yet)."""
        if not self.unsynced and not self._created:
            return
        try:
            for first in sorted(self._touched):
                fd = os.open(self._log.path(first), os.O_RDONLY)
                try:
                    fsync_file(fd)
                finally:
                    os.close(fd)
            if self._created:
                fsync_dir(self._log.dir)
        except OSError as e:
            self._store._poison(f"fsync of the commit log failed at position "
                                f"{self._log.tail.head} during a bulk write", e)
        self._touched = {self._log.tail.seg_first}
        self._created = False
        self.unsynced = 0

    def finish(self) -> None:
        """sync(), then make the stream logs durable too (so a reboot does
        not have to rebuild them from the commit log)."""
        self.sync()
        self._store._sync_streams_locked()
