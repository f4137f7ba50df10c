"""The writer lock: one writer at a time, across threads and processes.

``STORE/writer.lock`` is locked with ``flock`` (through filelock's
``UnixFileLock``; never its soft fallback, which a crash would leave behind).
The kernel drops the lock when its holder dies, so a crashed writer never
blocks the store.  Readers never take it.

Holding the lock costs every other writer its wait: hold it only for the
version check, the writes and the fsync of one append.  Waiting polls with a
short, growing back-off (0.2 ms to 20 ms) rather than filelock's fixed 50 ms,
so that writers queued behind each other hand the lock on quickly.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

from .errors import StoreLocked

if sys.platform == "win32":  # pragma: no cover
    from filelock import WindowsFileLock as _PlatformLock
else:
    from filelock import UnixFileLock as _PlatformLock

from filelock import Timeout


class WriterLock:
    def __init__(self, path: str, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._flock = _PlatformLock(path, thread_local=False)

    @contextmanager
    def hold(self, timeout: float | None = None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + max(timeout, 0)
        if not self._thread_lock.acquire(timeout=max(timeout, 0) if timeout >= 0 else -1):
            raise self._locked(timeout)
        try:
            delay = 0.0002
            while True:
                try:
                    self._flock.acquire(timeout=0)
                    break
                except Timeout:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._locked(timeout) from None
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 0.02)
            try:
                yield
            finally:
                self._flock.release()
        finally:
            self._thread_lock.release()

    def _locked(self, timeout: float) -> StoreLocked:
        return StoreLocked(
            f"the store is locked by another writer (waited {timeout:g}s for "
            f"{os.path.dirname(self.path) or '.'}); retry, or raise --lock-timeout"
        )
