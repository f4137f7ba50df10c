"""The file backend's catalogue: the streams a directory holds and ``info``'s
figures (sizes, counts, per-stream rows), read from the stream directories
and the commit log without the writer lock.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

from ...core.backend import StreamRow
from ...disk import recovery
from ...disk.commitlog import CommitLog
from ...disk.format import FORMAT_VERSION
from ...disk.segment import is_dir as _is_dir, listdir as listdir_nofollow, read_small
from ...disk.streamlog import StreamLog
from ...errors import CorruptStore
from .names import (CHECKPOINTS_DIR, ID_FILE, LOG_DIR, LOG_IDX, LOG_SEG, QUARANTINE,
                    SNAPSHOT_SUFFIX, SNAPSHOTS_DIR, STREAM_IDX, STREAM_SEG, STREAMS_DIR)

class FileCatalogue:
    """Mixed into :class:`evstore.backends.files.engine.FileBackend`."""

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
        kinds, counts, rows = self._tally_files(per_stream)
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

    def _tally_files(self, per_stream: bool) -> tuple[dict, dict, dict]:
        """One walk of the directory: bytes by kind of file, counts, and
        (with ``per_stream``) the per-stream rows keyed by stream key."""
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
                _tally_file(root, top, name, size, kinds, counts, row)
        return kinds, counts, rows


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


def _tally_file(root: str, top: str, name: str, size: int, kinds: dict, counts: dict,
                row) -> None:
    """Count one file of the store by what it is (its top directory and
    name, in directory ``root``), and in its stream's row when there is one."""
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
