"""Waking followers of a store directory: inotify on the commit log's directory.

Why inotify and not polling: a follower (``tail -f``, ``subscribe``) should
see a commit within milliseconds without reading the log in a loop.  Every
commit writes to a segment in ``log/`` (or creates one), which inotify
reports; where inotify is missing or out of watches, the watcher polls.
"""
from __future__ import annotations

import os
import sys

from ...core.backend import Watcher, _drain_pipe
from .names import LOG_DIR

_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_MOVED_TO = 0x00000080
POLL = 0.05  #: seconds between looks when there are no notifications


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
    """:class:`~evstore.core.backend.Watcher` for a directory store."""

    def __init__(self, backend, notify: bool = True):
        super().__init__(backend)
        self.inotify = inotify_watch(os.path.join(backend.directory, LOG_DIR)) if notify else None

    def log_directory(self) -> str:
        return os.path.join(self.backend.directory, LOG_DIR)

    def _fds(self) -> list[int]:
        return [] if self.inotify is None else [self.inotify]

    def _timeout(self, left):
        if self.inotify is not None:
            return left
        return POLL if left is None else min(left, POLL)

    def _drain(self, fd: int) -> None:
        _drain_pipe(fd)

    def close(self) -> None:
        fd, self.inotify = self.inotify, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        super().close()
