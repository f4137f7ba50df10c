"""The writer lock: one writer at a time, across threads and processes.

What is locked (``flock(2)``) is the **store directory itself**, through a
descriptor of it.  A lock on a *file name* can be defeated while it is held:
``rm STORE/writer.lock`` (an admin, a tmp cleaner) and the next writer creates
a fresh file, locks it and writes beside the holder (issue 12: two appends
acknowledged with the same version).  A directory holding files cannot be
unlinked, and after taking the lock the writer checks that the path still
names the directory it locked (a store moved aside and replaced is re-locked).
The kernel drops the lock when its holder dies, so a crashed writer never
blocks the store; readers never take it.

``STORE/writer.lock`` is kept, for two reasons:

* **Older writers.** evstore before issue 12 locked only that file.  A writer
  of this version also locks it (after the directory), so an old process still
  running against the store excludes new ones and is excluded by them.  It is
  opened once per handle and never through a link (a link there is refused:
  CorruptStore, like any link inside the store); if the name was removed or
  replaced it is reopened, so old writers find it again.
* **Who holds it.**  On each acquire the holder writes one line into it,
  ``<pid> <since, µs since the epoch> <command>`` (one ``pwrite`` of ~80 bytes
  into a file kept open; no fsync), so that a writer whose ``--lock-timeout``
  runs out can name the holder.  That line is advice: the reader accepts only
  a well-formed line of a live process, read without following links, and
  says "holder unknown" otherwise.

Why not filelock's ``FileLock`` on POSIX: it re-opens the lock file and runs
its fork and re-entrancy bookkeeping on every acquire, which measured ~220 µs
per append on the reference machine -- as much as the fsync the append pays
for.  Here the descriptors are opened once per store handle and an acquire is
two ``flock`` calls, an ``fstat`` and the ``pwrite``: ~10 µs against ~4 µs
before, measured on the development machine (~2% of a durable append).
filelock remains the implementation on platforms without ``fcntl`` (Windows).
Decision recorded in docs/FORMAT.md.

Holding the lock costs every other writer its wait: it is held only for the
version check, the writes and the fsync of one append.  Waiting polls with a
short, growing back-off (0.1 ms to 2 ms) so that writers queued behind each
other hand the lock on quickly without spinning.
"""
from __future__ import annotations

import os
import re
import stat
import sys
import threading
import time
from contextlib import contextmanager

from ...disk.segment import O_NOFOLLOW, open_file
from ...errors import StoreLocked

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

#: The holder line: pid, since (µs since the epoch), command (printable ASCII).
_HOLDER = re.compile(rb"([1-9][0-9]{0,9}) ([0-9]{1,20}) ([\x20-\x7e]{1,200})\n")
_HOLDER_MAX = 256


def _command() -> str:
    """A short, printable name of this process for the holder line.

    Only what names the work, never option values (``--data`` holds event
    data, a host program's options may hold passwords): for the evstore
    command its subcommand and the arguments before the first option
    (``evstore import big.ndjson``); for any other program its name."""
    argv = list(sys.argv) or [""]
    head = os.path.basename(argv[0] or "")
    if head == "__main__.py" or head.startswith("evstore"):
        words = ["evstore"]
        for a in argv[1:]:
            if a.startswith("-"):
                break
            words.append(a)
        text = " ".join(words)
    else:
        text = {"-c": "python -c", "-m": "python -m", "": "python"}.get(head, head)
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text[:197] + "..." if len(text) > 200 else text


class WriterLock:
    def __init__(self, path: str, timeout: float = 30.0):
        #: ``STORE/writer.lock``; the directory locked is the one holding it
        self.path = path
        self.dir = os.path.dirname(path) or "."
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._dfd = -1        # the store directory (the lock that counts)
        self._dident = None   # its (st_dev, st_ino)
        self._fd = -1         # writer.lock (older writers; the holder line)
        self._fident = None
        self._pid = -1
        self._prefix = self._suffix = b""
        self._fallback = None
        if fcntl is None:  # pragma: no cover
            from filelock import FileLock

            self._fallback = FileLock(path, thread_local=False)

    # -- descriptors ----------------------------------------------------------------
    def _open_dir(self) -> None:
        # The store path itself may be a link the user chose (STORE ->
        # /data/store); links *inside* the store are never followed.
        fd = os.open(self.dir, os.O_RDONLY | _O_DIRECTORY)
        st = os.fstat(fd)
        self._close_dir()
        self._dfd, self._dident = fd, (st.st_dev, st.st_ino)

    def _open_file(self) -> None:
        fd = open_file(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(21, f"{self.path} is not a regular file")
        self._close_file()
        self._fd, self._fident = fd, (st.st_dev, st.st_ino)

    def _ensure(self) -> None:
        # A forked child must not share the parent's open file descriptions
        # (flock locks belong to them): reopen after a fork.
        if self._pid != os.getpid():
            self._dfd = self._fd = -1
            self._pid = os.getpid()
            self._prefix = f"{self._pid} ".encode()
            self._suffix = f" {_command()}\n".encode()
        if self._dfd < 0:
            self._open_dir()
        if self._fd < 0:
            self._open_file()

    def _close_dir(self) -> None:
        if self._dfd >= 0:
            os.close(self._dfd)
        self._dfd = -1

    def _close_file(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    # -- acquiring --------------------------------------------------------------------
    def _try(self) -> bool:
        if self._fallback is not None:  # pragma: no cover
            from filelock import Timeout

            try:
                self._fallback.acquire(timeout=0)
                return True
            except Timeout:
                return False
        self._ensure()
        try:
            fcntl.flock(self._dfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            if os.fstat(self._fd).st_nlink == 0:
                # writer.lock was removed or replaced: reopen it by name, so
                # that older writers (which lock only it) see us again
                self._open_file()
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # an older writer holds writer.lock
                fcntl.flock(self._dfd, fcntl.LOCK_UN)
                return False
            self._write_holder()
            return True
        except BaseException:
            fcntl.flock(self._dfd, fcntl.LOCK_UN)
            raise

    def _write_holder(self) -> None:
        line = self._prefix + str(time.time_ns() // 1000).encode() + self._suffix
        try:
            os.pwrite(self._fd, line, 0)
        except OSError:
            pass  # advice only (a full disk must not stop a writer here)

    def _release(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            self._fallback.release()
        else:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            fcntl.flock(self._dfd, fcntl.LOCK_UN)

    @contextmanager
    def hold(self, timeout: float | None = None):
        timeout = self.timeout if timeout is None else max(timeout, 0.0)
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=timeout):
            raise self._locked(timeout)
        try:
            delay = 0.0001
            while not self._try():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._locked(timeout)
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.002)
            try:
                yield
            finally:
                self._release()
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        if self._pid == os.getpid():
            self._close_file()
            self._close_dir()
        self._fd = self._dfd = -1

    def _locked(self, timeout: float) -> StoreLocked:
        return StoreLocked(
            f"the store is locked by another writer (waited {timeout:g}s for "
            f"{self.dir}; {describe_holder(self.path)}); retry, or raise --lock-timeout"
        )


def read_holder(path: str) -> tuple[int, float, str] | None:
    """(pid, since as epoch seconds, command) from a ``writer.lock`` holder
    line, or None when there is none that can be trusted: the file is a link
    or not a regular file, the line is malformed, or its process is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.pread(fd, _HOLDER_MAX, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    m = _HOLDER.match(data)
    if not m:
        return None
    pid = int(m.group(1))
    if not _alive(pid):
        return None
    return pid, int(m.group(2)) / 1e6, m.group(3).decode("ascii")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists, owned by someone else
    return True


def describe_holder(path: str) -> str:
    """``held by pid 123 (evstore import x.ndjson) since 2026-12-06 07:40:12 UTC``,
    or ``holder unknown``."""
    h = read_holder(path)
    if h is None:
        return "holder unknown"
    pid, since, command = h
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
    return f"held by pid {pid} ({command}) since {when}"
