"""Where things are in a store directory, as verify and repair see it.

The core opens files by name when it needs them; verify and repair instead
list what is *there* -- including what should not be: segments with foreign
names, directories without an ``id``, temp files a crash left behind.
docs/FORMAT.md describes the layout; docs/OPERATIONS.md what these tools do
with each kind of file.
"""
from __future__ import annotations

import errno
import os
import re
import stat

from ..backends.files.names import (  # noqa: F401
    CHECKPOINTS_DIR, COMPACT_JOURNAL, CUTS_FILE, FSYNC_FAILED, ID_FILE, LOCK_FILE, LOG_DIR,
    LOG_IDX, LOG_SEG, MARKER, QUARANTINE, RETENTION_FILE, SNAPSHOTS_DIR, STATE_FILE, STREAM_IDX,
    STREAM_SEG, STREAMS_DIR,
)
from ..disk.segment import O_NOFOLLOW, O_NONBLOCK, is_dir, stable_listdir
from ..errors import CorruptStore

__all__ = [
    "LOG_DIR", "STREAMS_DIR", "SNAPSHOTS_DIR", "MARKER", "LOCK_FILE", "FSYNC_FAILED",
    "STATE_FILE", "QUARANTINE", "CHECKPOINTS_DIR", "ID_FILE", "LOG_SEG", "LOG_IDX",
    "STREAM_SEG", "STREAM_IDX", "CUTS_FILE", "RETENTION_FILE", "COMPACT_JOURNAL",
]


_NUMBERED = re.compile(r"(\d{16})(\.[a-z]+)\Z")
_KEY = re.compile(r"[0-9a-f]{32}\Z")


def is_temp(name: str) -> bool:
    """Names of the temp files and directories writers create then rename."""
    return name.startswith(".tmp")


def numbered(names, suffix: str) -> list[int]:
    """The first numbers of ``NNNNNNNNNNNNNNNN<suffix>`` files, sorted."""
    out = []
    for name in names:
        m = _NUMBERED.match(name)
        if m and m.group(2) == suffix:
            out.append(int(m.group(1)))
    out.sort()
    return out


def seg_path(directory: str, first: int, suffix: str) -> str:
    return os.path.join(directory, f"{first:016d}{suffix}")


def listdir(path: str) -> list[str]:
    """The names in a directory of the store; none for a link (verify reports
    links on their own, and nothing is ever looked for through one)."""
    try:
        return stable_listdir(path)
    except (FileNotFoundError, NotADirectoryError, CorruptStore):
        return []


def opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` (and the flags for ``os.open``) that
    verify and repair use: never through a link (OSError ELOOP, reported
    like any unreadable file; the link itself is reported on its own),
    never blocking on a FIFO, and only a regular file (anything else there
    is OSError EINVAL, reported as unreadable)."""
    fd = os.open(path, flags | O_NOFOLLOW | O_NONBLOCK)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


#: For a plain ``os.open``: never through a link, never waiting on a FIFO
#: (reading one then fails or finds nothing, as for a damaged file).
RDONLY = os.O_RDONLY | O_NOFOLLOW | O_NONBLOCK


class opened:
    """A store file opened read-only, never through a link, for a ``with``
    block that closes it: ``with L.opened(path) as fd: ...``.

    The file is opened here, by the call, not on entering the block.  A
    caller that reports an unreadable file (each in its own words: a report
    entry, a skipped segment, an answer of None) wraps only this call in
    ``try/except OSError``; an OSError raised later, while the block reads,
    is then never mistaken for one and propagates as it always did::

        try:
            opening = L.opened(path)
        except OSError as e:
            ...  # the caller's own handling of a file it cannot open
        with opening as fd:
            ...
    """

    __slots__ = ("fd",)

    def __init__(self, path: str):
        self.fd = opener(path, os.O_RDONLY)

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def stream_dirs(root: str):
    """Yield (key, path) of every stream directory under ``streams/``, plus
    (None, path) for entries that do not belong there (temp leftovers and
    strangers), in a stable order."""
    for shard in listdir(root):
        spath = os.path.join(root, shard)
        if not is_dir(spath) or is_temp(shard) or len(shard) != 2:
            yield None, spath
            continue
        for key in listdir(spath):
            kpath = os.path.join(spath, key)
            if _KEY.match(key) and key[:2] == shard and is_dir(kpath):
                yield key, kpath
            else:
                yield None, kpath


def temp_leftovers(directory: str):
    """Paths of ``.tmp*`` files and directories anywhere in the store except
    the quarantine (which keeps what earlier repairs moved there)."""
    for root, dirs, files in os.walk(directory):
        rel = os.path.relpath(root, directory)
        if rel.split(os.sep)[0] == QUARANTINE:
            dirs[:] = []
            continue
        for d in list(dirs):
            if is_temp(d):
                dirs.remove(d)
                yield os.path.join(root, d)
        for f in files:
            if is_temp(f):
                yield os.path.join(root, f)


def links(directory: str) -> list[str]:
    """Every symbolic link inside the store (never followed)."""
    out = []
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                out.append(p)
    return sorted(out)


def specials(directory: str) -> list[str]:
    """Every FIFO, socket or device inside the store: evstore never makes
    one, and reading one (a FIFO) could wait forever or read another
    program's data."""
    out = []
    for root, dirs, files in os.walk(directory):
        for name in files:
            p = os.path.join(root, name)
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
                out.append(p)
    return sorted(out)


def rel(directory: str, path: str) -> str:
    return os.path.relpath(path, directory)


def file_size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0
