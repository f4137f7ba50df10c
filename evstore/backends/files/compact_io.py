"""Compaction's output files: a buffered temp-file writer (``_Out``), a byte
counter with the same methods for a dry run (``_Counter``), range copies
between files, and removing a temp file.  (Runs of kept frames between
removed ones are sliced from the walker's own buffer: compact_log.py.)

Shared by the stream-log and commit-log steps (compact_streams.py,
compact_log.py), so each writes its new segments the same way.
"""
from __future__ import annotations

import os

from ...disk.segment import open_file, write_all
from ...errors import CorruptStore

#: Bytes buffered before a write, and copied per read.
_BUF = 1 << 20


class _Out:
    """A temp segment being written, buffered."""

    def __init__(self, path: str):
        self.fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self.size = 0
        self.buf = bytearray()

    def write(self, data) -> int:
        off = self.size
        self.buf += data
        self.size += len(data)
        if len(self.buf) >= _BUF:
            self._flush()
        return off

    def copy(self, fd: int, start: int, end: int) -> None:
        """Bytes ``start..end`` of ``fd``, as they are."""
        if end - start < _BUF:
            data = os.pread(fd, end - start, start)
            if len(data) < end - start:
                raise CorruptStore(f"a file being compacted ended at offset "
                                   f"{start + len(data)}, before {end}")
            self.write(data)
            return
        self._flush()
        _copy_range(fd, self.fd, start, end)
        self.size += end - start

    def _flush(self) -> None:
        write_all(self.fd, self.buf)
        self.buf = bytearray()

    def flush(self) -> None:
        """Write what is buffered (not fsynced: compact_log fsyncs the file
        when it is about to be moved into place)."""
        self._flush()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Counter:
    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        off = self.size
        self.size += len(data)
        return off

    def copy(self, fd, start: int, end: int) -> None:
        self.size += end - start


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Bytes ``start..end`` of ``src`` appended to ``dst``, a MiB at a time.
    (Not ``copy_file_range``: every byte evstore writes goes through
    ``os.write``, which the power-loss tests record.)"""
    pos = start
    while pos < end:
        data = os.pread(src, min(_BUF, end - pos), pos)
        if not data:
            raise CorruptStore(f"a file being compacted ended at offset {pos}, before {end}")
        write_all(dst, data)
        pos += len(data)


def _unlink_tmp(tmp) -> None:
    tseg, tidx, st = tmp
    os.close(st["fd"])
    for p in (tseg, tidx):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
