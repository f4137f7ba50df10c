"""Waking followers of a store directory: inotify on the commit log's directory.

Why inotify and not polling: a follower (``tail -f``, ``subscribe``) should
see a commit within milliseconds without reading the log in a loop.  Every
commit writes to a segment in ``log/`` (or creates one), which inotify
reports; where inotify is missing or out of watches (or notifications prove
unreliable), the watcher polls.
"""
from __future__ import annotations

import os
import sys

from ...core.backend import Watcher, _drain_pipe, _sleep
from .names import LOG_DIR

POLL = Watcher.poll_interval  #: seconds between looks when there are no notifications

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080


def inotify_watch(directory: str) -> int | None:
    """An inotify descriptor watching ``directory`` for writes and new files,
    or None where inotify is missing or out of watches (then we poll)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
        add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError, ImportError):
        return None
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if add(fd, os.fsencode(directory), _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO) < 0:
        os.close(fd)
        return None
    return fd


class FileWatcher(Watcher):
    """:class:`~evstore.core.backend.Watcher` for a directory store.

    Notifications are not trusted blindly (docs/TAIL.md, "Waiting"): when a
    look after a sleep that no notification interrupted finds a commit, and
    no notification arrives within ``GRACE`` seconds (a write is visible a
    moment before it is announced), they are lost here (a network file
    system, say) and the watcher polls from then on.  Its follower looks
    now and then anyway (``NOTIFY_SAFETY`` in the subscriptions), which is
    what gives such a look the chance to happen."""

    GRACE = 0.05

    def __init__(self, backend, notify: bool = True):
        super().__init__(backend)
        self.inotify = inotify_watch(os.path.join(backend.directory, LOG_DIR)) if notify else None

    @property
    def notifying(self) -> bool:
        return self.inotify is not None

    def log_directory(self) -> str:
        return os.path.join(self.backend.directory, LOG_DIR)

    def _fds(self) -> list[int]:
        fd = self.inotify
        return [] if fd is None else [fd]

    def _timeout(self, left):
        if self.inotify is not None:
            return left
        return self.poll_interval if left is None else min(left, self.poll_interval)

    def _drain(self, fd: int) -> None:
        _drain_pipe(fd)

    def _unannounced(self) -> None:
        fd = self.inotify
        if fd is None:
            return
        if _sleep([fd], self.GRACE):
            _drain_pipe(fd)
        else:
            self.stop_notify()

    def stop_notify(self) -> None:
        with self._lock:
            fd, self.inotify = self.inotify, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def close(self) -> None:
        self.stop_notify()
        super().close()
