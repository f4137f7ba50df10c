"""Running the user's reducers from the command line without letting them
speak for evstore.

A reducer is the user's code: it may ``print``, ``os.write(1, ...)``, call C
code that writes to the C library's stdout, or never return.  None of that
may reach the command's stdout, where scripts read evstore's JSON, and none
of it may hold an append's acknowledgement.

- :func:`to_stderr` points ``sys.stdout`` *and* file descriptor 1 at stderr
  while user code runs (loading a reducer runs its module, so that counts),
  and flushes the C library's buffers before pointing them back.  The
  command writes its own output only outside it.
- :func:`guarded` does the same around each step of an iterator whose steps
  run user code (``replay --steps`` prints between them).
- :func:`auto_snapshot_after` makes the automatic snapshot an ``append``
  asks for, *after* the append's result is printed and flushed, in a child
  process that is killed when it takes longer than the time budget
  (``$EVSTORE_SNAPSHOT_TIMEOUT`` seconds, default 5): a looping reducer
  costs a few seconds, never the acknowledgement, and its failure is a note.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

ENV_TIMEOUT = "EVSTORE_SNAPSHOT_TIMEOUT"

_fflush = None


def _flush_c_stdio() -> None:
    """fflush(NULL): what C code left in the C library's stdout buffer goes
    out now, while descriptor 1 is still stderr."""
    global _fflush
    if _fflush is None:
        try:
            import ctypes

            _fflush = ctypes.CDLL(None).fflush
        except (OSError, AttributeError, ImportError):
            _fflush = False
    if _fflush:
        _fflush(None)


@contextmanager
def to_stderr():
    """While inside: ``print`` and writes to descriptor 1 go to stderr."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    saved = sys.stdout
    try:
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no stdout, or no stderr: nothing to protect or nowhere to go
        saved_fd = None
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        try:
            _flush_c_stdio()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        sys.stdout = saved
        if saved_fd is not None:
            os.dup2(saved_fd, 1)
            os.close(saved_fd)


def guarded(it):
    """``it``'s items, each computed inside :func:`to_stderr`."""
    it = iter(it)
    while True:
        with to_stderr():
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def _die_with_parent(parent: int) -> None:
    """Linux: the child is killed when the append's process dies (killed
    itself before its deadline), so a looping reducer is never orphaned."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)
    except (OSError, AttributeError, ImportError):
        pass


def snapshot_timeout() -> float:
    """The time budget of an automatic snapshot ($EVSTORE_SNAPSHOT_TIMEOUT)."""
    from ..features.autosnap import SNAPSHOT_TIMEOUT

    raw = os.environ.get(ENV_TIMEOUT)
    if raw:
        try:
            value = float(raw)
            if value >= 0:
                return value
        except ValueError:
            pass
    return SNAPSHOT_TIMEOUT


def auto_snapshot_after(es, stream: str, before: int, after: int, every, reducer) -> None:
    """The automatic snapshot of an append that has been acknowledged (its
    result printed and flushed).  Never raises and never changes the exit
    code: the append is committed whatever happens here."""
    from ..features.autosnap import auto_snapshot, crossed
    from .base import note

    if crossed(every, before, after) is None:
        return
    timeout = snapshot_timeout()

    def work() -> None:
        with to_stderr():
            auto_snapshot(es, stream, before, after, every=every, reducer=reducer,
                          warn=lambda m: note(f"warning: {m}"))

    if not hasattr(os, "fork"):  # pragma: no cover - not on Linux or macOS
        work()
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        work()
        return
    if pid == 0:  # the child: make the snapshot, then leave without cleanup
        code = 0
        try:
            _die_with_parent(parent)
            work()
        except BaseException:  # noqa: BLE001 - auto_snapshot reports; this is a last guard
            code = 1
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except OSError:
        pass
    note(f"warning: automatic snapshot of {stream!r} skipped: not made within "
         f"{timeout:g} s (does the reducer loop? ${ENV_TIMEOUT} sets the limit); "
         "the append is committed")
