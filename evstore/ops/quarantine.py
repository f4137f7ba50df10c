"""Where repair puts what it takes out of a store.

Each repair run that removes anything gets its own directory,
``STORE/quarantine/repair-<UTC time>-<pid>/`` (``-2``, ``-3``... when that
exists: a run never writes into another run's directory), holding:

* ``NNNN.bin`` -- removed bytes, one file per contiguous range of a store
  file, exactly as they were;
* ``manifest.json`` -- for each ``.bin``: the file and offset it came from,
  its length and why it was removed (written last: a directory without a
  manifest is an interrupted run, and its ``.bin`` files are still complete);
* ``removed-events.ndjson`` -- every intact event repair took out of the
  store, as recorded events (docs/CLI-JSON.md) in position order where known: the
  input for putting them back with ``evstore append`` (docs/OPERATIONS.md);
* ``temp/`` -- temp files that crashes left behind.

Everything is fsynced before repair changes the store, so an interrupted
repair never loses removed bytes.
"""
from __future__ import annotations

import json
import os
import time

from ..disk.recovery import make_dir
from ..disk.segment import fsync_dir, fsync_file, nofollow, open_file, write_all
from . import layout as L


class Quarantine:
    def __init__(self, directory: str, dry_run: bool):
        self.store = directory
        self.dry_run = dry_run
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.dir = os.path.join(directory, L.QUARANTINE, f"repair-{stamp}-{os.getpid()}")
        self.entries: list[dict] = []
        self.events = 0
        self._events_file = None
        self._made = False

    @property
    def used(self) -> bool:
        return bool(self.entries) or self.events > 0

    @property
    def events_path(self) -> str:
        return os.path.join(self.dir, "removed-events.ndjson")

    def _mkdir(self) -> None:
        if not self._made:
            make_dir(self.store, L.QUARANTINE)  # never a link
            base, k = self.dir, 1
            while True:  # a new directory of its own, never one reused
                try:
                    os.mkdir(self.dir)
                    break
                except FileExistsError:
                    k += 1
                    self.dir = f"{base}-{k}"
            fsync_dir(os.path.dirname(self.dir))
            self._made = True

    def keep(self, path: str, offset: int, data: bytes, reason: str) -> None:
        """Keep ``data`` (removed from ``path`` at ``offset``)."""
        self.keep_chunks(path, offset, len(data), reason, lambda: [data])

    def keep_range(self, fd: int, path: str, start: int, end: int, reason: str) -> None:
        """Keep bytes ``[start, end)`` of the open file ``fd`` (``path``)."""
        if end <= start:
            return

        def chunks():
            pos = start
            while pos < end:
                chunk = os.pread(fd, min(end - pos, 8 << 20), pos)
                if not chunk:
                    break
                yield chunk
                pos += len(chunk)
        self.keep_chunks(path, start, end - start, reason, chunks)

    def keep_chunks(self, path: str, offset: int, n: int, reason: str, chunks) -> None:
        """Write one ``.bin`` whole or not at all: a failed write (a full
        disk) removes the file it made, and its entry, before the error goes up."""
        entry = self._entry(path, offset, n, reason)
        if self.dry_run:
            return
        made = False
        try:
            self._mkdir()
            target = os.path.join(self.dir, entry["file"])
            fd = open_file(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            made = True
            try:
                for chunk in chunks():
                    write_all(fd, chunk)
                fsync_file(fd)
            finally:
                os.close(fd)
        except BaseException:
            self.entries.remove(entry)
            if made:
                try:
                    os.unlink(target)
                except OSError:
                    pass
            raise

    def _entry(self, path: str, offset: int, n: int, reason: str) -> dict:
        entry = {"file": f"{len(self.entries) + 1:04d}.bin", "source": L.rel(self.store, path),
                 "offset": offset, "bytes": n, "reason": reason}
        self.entries.append(entry)
        return entry

    def event(self, line: str) -> None:
        """Keep one removed event (a recorded event's JSON line)."""
        self.events += 1
        if self.dry_run:
            return
        if self._events_file is None:
            self._mkdir()
            self._events_file = open(self.events_path, "a", encoding="utf-8", opener=nofollow)
        self._events_file.write(line + "\n")

    def move_in(self, path: str) -> str | None:
        """Move a temp leftover into ``temp/``; returns its new path."""
        if self.dry_run:
            return None
        self._mkdir()
        tdir = make_dir(self.dir, "temp")
        name = L.rel(self.store, path).replace(os.sep, "__")
        dest = os.path.join(tdir, name)
        os.rename(path, dest)
        return dest

    def flush(self) -> None:
        """Make everything kept so far durable (before the store changes)."""
        if self.dry_run:
            return
        if self._events_file is not None:
            self._events_file.flush()
            fsync_file(self._events_file.fileno())
        if self._made:
            fsync_dir(self.dir)

    def close(self, report: dict | None = None) -> None:
        if self._events_file is not None:
            self._events_file.close()
            self._events_file = None
        if self.dry_run or not self._made:
            return
        from ..disk.recovery import write_atomic

        manifest = {"store": os.path.abspath(self.store), "removed": self.entries,
                    "removed_events": self.events,
                    "events_file": os.path.basename(self.events_path) if self.events else None}
        if report is not None:
            manifest["report"] = report
        write_atomic(os.path.join(self.dir, "manifest.json"),
                     (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
