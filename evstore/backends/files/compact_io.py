"""Compaction's output files: a buffered temp-file writer (``_Out``), a byte
counter with the same methods for a dry run (``_Counter``), range copies
between files, and removing a temp file.

Shared by the stream-log and commit-log steps (compact_streams.py,
compact_log.py), so each writes its new segments the same way.
"""
from __future__ import annotations

import os

from ...disk.segment import open_file
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

    def copy(self, fd: int, start: int, end: int, window: "_Window | None" = None) -> None:
        """Bytes ``start..end`` of ``fd``, as they are (short runs through
        ``window``, a reader of ``fd``, when given)."""
        if end - start < _BUF:
            self.write(window.get(start, end) if window is not None
                       else os.pread(fd, end - start, start))
            return
        self._flush()
        _copy_range(fd, self.fd, start, end)
        self.size += end - start

    def _flush(self) -> None:
        view = memoryview(self.buf)
        while view:
            view = view[os.write(self.fd, view):]
        self.buf = bytearray()

    def flush(self) -> None:
        """Write what is buffered (not fsynced: compact_log fsyncs the file
        when it is about to be moved into place)."""
        self._flush()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Window:
    """Reads of a file at rising offsets, served from one large read:
    a run of kept frames (a few KiB between two removed ones) costs a slice,
    not a system call."""

    def __init__(self, fd: int):
        self.fd = fd
        self.start = 0
        self.data = b""

    def get(self, start: int, end: int):
        rel = start - self.start
        if rel < 0 or end - self.start > len(self.data):
            self.start, rel = start, 0
            self.data = os.pread(self.fd, max(end - start, _BUF), start)
            if len(self.data) < end - start:
                raise CorruptStore(f"a file being compacted ended at offset "
                                   f"{start + len(self.data)}, before {end}")
        return memoryview(self.data)[rel:end - self.start]


class _Counter:
    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        off = self.size
        self.size += len(data)
        return off

    def copy(self, fd, start: int, end: int, window=None) -> None:
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
        view = memoryview(data)
        while view:
            view = view[os.write(dst, view):]
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
