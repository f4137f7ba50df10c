"""One compaction or repair of a store at a time, across processes.

Why: most of a compaction's work happens outside the writer lock, against
files another compaction could delete or replace meanwhile (a stream
directory it found with something to cut, a segment it is copying), and
repair moves every temp file it finds into quarantine, a running
compaction's included.  So each of them holds this lock from start to end;
two at once would gain nothing.  Writers and readers never take it.

The lock is an ``flock`` of the store's ``log/`` directory: a directory
that holds files cannot be unlinked or replaced while it is held (a lock
*file* could be), no file is added to the store for it, and the kernel
lets it go when its holder dies.  The store directory's own ``flock`` is
the writer lock, which both take for each step, always after this one.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

from ...disk.segment import open_file
from ...errors import CorruptStore, StoreLocked
from .names import COMPACT_TMP, LOG_DIR

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one compaction per process only
    fcntl = None

_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


@contextmanager
def compaction_lock(d: str, timeout: float, missing_ok: bool = False):
    """Wait (up to ``timeout`` seconds, then StoreLocked) until no other
    process compacts or repairs the store, and keep it so until the block
    ends.  ``missing_ok`` (repair): a store without a real ``log/``
    directory, where no compaction can run, is entered without the lock."""
    fd = _open(d, missing_ok)
    if fd is None:
        yield
        return
    try:
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = 0.005
        while not _try(fd, fcntl.LOCK_EX):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreLocked(
                    f"a compaction or repair of {d} is running (waited {timeout:g}s); "
                    "retry when it is done, or raise --lock-timeout")
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
        yield  # the lock goes with the descriptor
    finally:
        os.close(fd)


def compaction_running(d: str) -> bool:
    """Whether a compaction (or repair) holds the lock now: its temp files
    are its work in progress, not leftovers."""
    fd = _open(d, True)
    if fd is None:
        return False
    try:
        if _try(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def maker_alive(name: str) -> bool:
    """Whether another process that made the temp file ``name``
    (``.tmp-compact-<pid>-...``) still runs: its file is work in progress,
    not a leftover.  This process's own count as leftovers (a compaction of
    this process that runs now holds the lock: no other one does)."""
    pid = name[len(COMPACT_TMP):].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's): not ours to remove
    return True


def _open(d: str, missing_ok: bool):
    if fcntl is None:  # pragma: no cover
        return None
    try:
        return open_file(os.path.join(d, LOG_DIR), os.O_RDONLY | _O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError, CorruptStore):
        if missing_ok:
            return None
        raise


def _try(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
