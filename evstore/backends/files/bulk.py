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

from ...core import rules
from ...core.forgetting import Cut, check_append
from ...disk.format import LOG_MAGIC, encode_frame
from ...disk.records import gap_payload
from ...errors import InvalidEvent
from ...model import AppendResult, check_stream_id
from .names import STREAM_IDX
from ...disk.segment import fsync_dir, fsync_file, open_file


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
        """Write one batch of packed events (``model.pack_fields``).

        Refused with InvalidEvent, nothing written, unless it continues
        what the store holds (:func:`evstore.core.rules.continues`) and is
        not older than its last commit (``any_time``: not older than the
        stream's last event -- a merge keeps each event's own time, so the
        commit log may go back in time where one store's events follow
        another's).  A gap before it (an export of a store where events
        were removed) is recorded as removed: a gap frame for the positions,
        the stream's floor for its versions.
        """
        check_stream_id(stream)
        store, log = self._store, self._log
        check_append(store._forget.cuts.get().get(stream), stream)
        sl, tail = store._stream_tail_locked(stream)
        why = rules.continues(stream, first_version, None if any_time else first_position,
                              recorded_us, tail.version, log.tail.head, 0, gaps=True)
        if why is None and any_time and first_position != log.tail.head + 1:
            why = f"position {first_position} is not the store's next ({log.tail.head + 1})"
        if why is not None:
            raise InvalidEvent(
                f"stream {stream!r}: version {first_version} at position {first_position} "
                f"does not continue the store (stream version {tail.version}, "
                f"last position {log.tail.head}): {why}")
        if first_position > log.tail.head + 1:
            self._gap(first_position)
        if first_version > tail.version + 1:
            sl, tail = self._version_gap(stream, sl, tail, first_version)
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

    def _gap(self, first_position: int) -> None:
        """Positions head+1 .. first_position-1 were removed where the
        batch comes from: a gap frame accounts for them."""
        log = self._log
        start = log.tail.head + 1
        before = log.tail.seg_first
        frame = encode_frame(LOG_MAGIC, gap_payload(start, first_position - start,
                                                    log.tail.last_recorded_us))
        log.commit(frame, start, first_position - start, log.tail.last_recorded_us,
                   self._store.segment_bytes)
        if log.tail.seg_first != before:
            self._touched.add(log.tail.seg_first)
            self._created = True

    def _version_gap(self, stream: str, sl, tail, first_version: int):
        """The stream's versions before ``first_version`` were removed where
        the batch comes from: its floor says so (durably, before the batch),
        its own older records (now below the floor) leave its log, which
        then starts at ``first_version`` (docs/FORMAT.md, "Forgetting")."""
        store = self._store
        cuts = dict(store._forget.cuts.get())
        old = cuts.get(stream)
        cuts[stream] = Cut(stream, first_version, False, old.deleted if old else 0)
        store._forget.put_cuts(cuts, True)
        if tail.seg_first:
            sl.close()
            for first in sl.list_segments():
                for path in (sl.path(first), sl.path(first, STREAM_IDX)):
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            fsync_dir(sl.dir)
        store._wtails.pop(stream, None)
        store._wstreams.pop(stream, None)
        return store._stream_tail_locked(stream)  # at first_version - 1, from the floor

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
                fd = open_file(self._log.path(first), os.O_RDONLY)
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
