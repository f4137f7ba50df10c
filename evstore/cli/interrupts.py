"""Ctrl-C and SIGTERM: one line on stderr, never a traceback, exit 128+N.

Installed before anything heavy is imported (``evstore.cli.main``), so that
even a signal in the first tenth of a second ends the same way.  A signal
raises :class:`Interrupted` (a BaseException, so that no ``except
Exception`` and none of click's handlers swallow it) at once -- except inside
:func:`deferred`, where commands that write (``import``, ``append``) let the
batch being committed finish and stop at the next safe point (``pending()``);
a second signal there stops at once (the store is crash-safe: that is a
crash, and loses nothing acknowledged).
"""
from __future__ import annotations

import signal
from contextlib import contextmanager

from ..errors import Interrupted

_state = {"signum": None, "defer": 0}


def _handle(signum, frame):
    if _in_hook(frame):
        _again(signum)  # inside the hook itself: not a place to stop either
        return
    first = _state["signum"] is None
    if first:
        _state["signum"] = signum
    if _state["defer"] and first:
        return
    raise Interrupted(signum, forced=bool(_state["defer"]))


def install() -> None:
    """SIGINT and SIGTERM raise Interrupted.  A SIGINT ignored by whoever
    started us (a background job of a shell) stays ignored."""
    import sys

    if sys.unraisablehook is not _unraisable:
        _state["unraisable"] = sys.unraisablehook
        sys.unraisablehook = _unraisable
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            signal.signal(sig, _handle)
        except (ValueError, OSError):  # not the main thread: leave them
            pass


def _unraisable(u) -> None:
    """Where an exception cannot propagate -- a weakref callback (the import
    system's own, while a module loads), a ``__del__`` -- Python prints it
    as "Exception ignored in ..." with a traceback and goes on as if the
    signal never came.  An Interrupted raised there is delivered again
    instead: the handler runs once that code has returned, and stops the
    command where it can."""
    if isinstance(u.exc_value, Interrupted):
        _again(u.exc_value.signum)
        return
    _state["unraisable"](u)


def _in_hook(frame) -> bool:
    while frame is not None:
        if frame.f_code is _unraisable.__code__:
            return True
        frame = frame.f_back
    return False


def _again(signum: int) -> None:
    """Deliver ``signum`` again in a millisecond, once the code running now
    has returned: SIGALRM's handler (installed here) raises it then, or
    waits once more while still inside the hook."""
    _state["again"] = signum
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.001)


def _alarm(_sig, frame):
    signum = _state.get("again")
    if signum is None:
        return
    if _in_hook(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    _state["again"] = None
    raise Interrupted(signum, forced=bool(_state["defer"]))


def pending() -> bool:
    """A signal arrived (inside :func:`deferred`, not yet acted on)."""
    return _state["signum"] is not None


def signum() -> int:
    return _state["signum"] or signal.SIGINT


@contextmanager
def deferred(now: bool = True):
    """Inside, the first signal is only noted: the caller stops at its next
    safe point (``pending()``).  One that arrived before is raised now.
    ``now=False``: signals still stop at once until the function this
    yields is called (when the work reaches the point where stopping
    half-way would cost something, e.g. once the writer lock is held)."""
    started = [False]

    def begin() -> None:
        if started[0]:
            return
        if _state["signum"] is not None:
            raise Interrupted(_state["signum"])
        started[0] = True
        _state["defer"] += 1

    if now:
        begin()
    try:
        yield begin
    finally:
        if started[0]:
            _state["defer"] -= 1


class immediate:
    """Inside :func:`deferred`, a stretch where a signal stops at once
    (waiting for input: nothing is being written).  A class, not a
    generator: ``append`` enters it once per event read from stdin."""

    __slots__ = ("saved",)

    def __enter__(self) -> None:
        if _state["signum"] is not None:
            raise Interrupted(_state["signum"])
        self.saved, _state["defer"] = _state["defer"], 0

    def __exit__(self, *exc) -> None:
        _state["defer"] = self.saved
