"""One segment file: frames appended at the end, read both ways.

A segment knows nothing of streams or positions; it only moves frames
(:mod:`evstore.disk.format`) from memory to a file, and opens, lists and syncs
the files of a store (never through a symbolic link); reading frames back is
:mod:`evstore.disk.frames`'.  Writing goes through
:meth:`SegmentWriter.append` and :meth:`SegmentWriter.sync`; the latter is the
single place where evstore calls ``fdatasync``/``fsync`` on segment data, so
crash tests can replace it (see ``tests/torture``).
"""
from __future__ import annotations

import errno
import os
import stat

from ..errors import CorruptStore

_fdatasync = getattr(os, "fdatasync", os.fsync)

#: Files inside the store are opened without following a symbolic link in
#: their last component (a link planted there would redirect writes).
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _link_error(path: str) -> CorruptStore:
    return CorruptStore(
        f"{path} is a symbolic link; evstore does not follow links inside the store")


#: Opening never waits: a FIFO planted where a file belongs would block an
#: ``open`` for reading until some writer came (forever).  Regular files and
#: directories ignore the flag, so it is left on the descriptor.
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def _kind(mode: int, other: str = "a device") -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a file" if stat.S_ISREG(mode)
            else other)


def not_a_file(path: str, what: str) -> CorruptStore:
    """The damage of something other than a regular file at a file's name."""
    return CorruptStore(f"{path} is {what}, not a regular file; evstore reads and writes "
                        "only its own files")


def open_file(path: str, flags: int, mode: int = 0o666) -> int:
    """``os.open`` for a file inside the store: never through a symbolic
    link, never blocking, and only a regular file (a directory with
    ``O_DIRECTORY``).  A link, a FIFO, a device, or a directory where a file
    belongs is damage to the store (CorruptStore naming the path); other
    errors (FileNotFoundError, ...) are raised as they are."""
    try:
        fd = os.open(path, flags | O_NOFOLLOW | O_NONBLOCK, mode)
    except OSError as e:
        # Linux says ELOOP, FreeBSD EMLINK
        if e.errno == errno.ELOOP or (e.errno == errno.EMLINK and os.path.islink(path)):
            raise _link_error(path) from None
        if e.errno == errno.EISDIR:  # a directory opened for writing
            raise not_a_file(path, "a directory") from None
        if e.errno == errno.ENXIO:  # a FIFO without a reader, a socket
            try:
                what = _kind(os.lstat(path).st_mode)
            except OSError:
                raise e from None
            raise not_a_file(path, what) from None
        raise
    try:
        st_mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not (stat.S_ISREG(st_mode) or (flags & _O_DIRECTORY and stat.S_ISDIR(st_mode))):
        os.close(fd)
        raise not_a_file(path, _kind(st_mode))
    return fd


def nofollow(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open`: :func:`open_file`'s refusal of links."""
    return open_file(path, flags)


def check_not_link(path: str) -> bool:
    """Refuse a directory inside the store that is a symbolic link, or not
    a directory at all (a file or a FIFO planted at its name): CorruptStore
    naming it.  True if ``path`` exists, False if it does not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise _link_error(path)
    if not stat.S_ISDIR(st.st_mode):
        raise CorruptStore(f"{path} is {_kind(st.st_mode)}, not a directory; "
                           "evstore reads and writes only its own files")
    return True


def stable_listdir(path: str) -> list[str]:
    """The names in a directory that another process may be adding files to.

    POSIX leaves it unspecified whether one ``readdir`` pass returns an entry
    created while it runs, and with hashed directories (ext4) a pass can
    return a segment created late in it yet miss one created just before:
    a hole a reader would take for lost data.  Segments are only ever added,
    so two passes that agree prove the set has no such hole: every entry the
    second pass could have missed was created after the first one ended,
    and the first pass would then differ from it.
    """
    names = sorted(listdir(path))
    while True:
        again = sorted(os.listdir(path))
        if again == names:
            return names
        names = again


def listdir(path: str) -> list[str]:
    """``os.listdir`` of a directory inside the store, never through a link
    nor of anything else at its name (CorruptStore); FileNotFoundError as
    it is."""
    check_not_link(path)
    return os.listdir(path)


def is_dir(path: str) -> bool:
    """A real directory, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def walk(top: str):
    """``os.walk`` of a directory inside the store: nothing when ``top`` is
    a link, and (as ``os.walk`` does by default) never into a link below it.
    Links below it are listed among the files or directories as they are:
    whoever opens one opens it with :func:`open_file`."""
    try:
        if stat.S_ISLNK(os.lstat(top).st_mode):
            return
    except OSError:
        return
    yield from os.walk(top)


def read_small(path: str, limit: int = 4096) -> bytes:
    """The first ``limit`` bytes of a small regular file inside the store,
    never through a link and never from a FIFO or device (CorruptStore,
    from :func:`open_file`)."""
    fd = open_file(path, os.O_RDONLY)
    try:
        return os.pread(fd, limit, 0)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """Write every byte of ``data`` at the file's offset: ``os.write`` may
    write less than it is given (a signal, a pipe, a nearly full disk), and
    a short write unnoticed would leave a frame or a kept range cut short.
    Always through ``os.write``, which the power-loss tests record."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_file(fd: int) -> None:
    """Flush a file's data to stable storage.  The fsync seam of evstore."""
    _fdatasync(fd)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (newly created files) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as e:  # pragma: no cover - e.g. EINVAL on some file systems
        if e.errno not in (22,):
            raise
    finally:
        os.close(fd)


class SegmentWriter:
    """Appends frames to one segment file.  Only the lock holder uses one."""

    def __init__(self, path: str):
        self.path = path
        self.fd = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.size = os.fstat(self.fd).st_size

    def append(self, data: bytes) -> int:
        """Write ``data`` at the end; return the offset it starts at."""
        offset = self.size
        write_all(self.fd, data)
        self.size = offset + len(data)
        return offset

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        self.size = size

    def sync(self) -> None:
        fsync_file(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
