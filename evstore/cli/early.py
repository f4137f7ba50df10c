"""What the command line does before it imports anything heavy.

Loading typer and building the command takes some 50 ms; a follower asked to
stop in that time (a supervisor's SIGTERM right after starting it) must still
exit 0, as it does later.  So ``evstore tail``'s stop signals are caught from
the first line of :func:`evstore.cli.main` on (:data:`STOP`), and the command
hands them its subscription once there is one.  Kept free of imports beyond
the standard library's ``os`` and ``signal``.
"""
from __future__ import annotations

import os
import signal
from typing import Optional

#: The root's options that take no value: skipped to find the command's name
#: (``evstore -q --store DIR read ...``).
GLOBAL_FLAGS = ("--quiet", "-q", "--no-color")


def command_name(argv: list[str]) -> Optional[str]:
    """The command ``argv`` plainly calls (``[--store DIR] [-q] [--no-color]
    COMMAND ...``), or None when it is anything else (other root options,
    --help, nothing)."""
    i = 0
    while i < len(argv):
        if argv[i] == "--store":
            i += 2
        elif argv[i].startswith("--store=") or argv[i] in GLOBAL_FLAGS:
            i += 1
        else:
            break
    if i >= len(argv) or argv[i].startswith("-"):
        return None
    return argv[i]


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask the subscription to stop at its next
    safe point: exit 0, no half line.  (SIGINT and SIGHUP stay ignored when
    we were started with them ignored, as Python and nohup expect.)  A signal
    that comes before there is a subscription is remembered and stops it as
    soon as it exists.  A second signal is for a consumer stuck writing to a
    full pipe (or waiting for an --exec handler): it exits at once (130),
    without saving the checkpoint -- at-least-once holds."""

    def __init__(self):
        self._target = None
        self.fired = 0
        self._old: dict = {}

    def install(self) -> "StopSignals":
        if self._old:
            return self  # already (early, by main)
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            old = signal.getsignal(sig)
            if sig != signal.SIGTERM and old == signal.SIG_IGN:
                continue  # nohup, or a background job of a script: leave it ignored
            self._old[sig] = old
            signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        self._target = None
        self.fired = 0

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum, frame):
        self.fired += 1
        if self.fired > 1:
            os.write(2, b"evstore: interrupted\n")
            os._exit(130)
        if self._target is not None:
            self._target.stop()

    @property
    def target(self):
        return self._target

    @target.setter
    def target(self, sub):
        self._target = sub
        if sub is not None and self.fired:
            sub.stop()


#: The stop signals of ``evstore tail``, installed by main() when the command
#: line calls ``tail``, and used by the command itself.
STOP = StopSignals()


def prepare(argv: list[str]) -> None:
    """Called first thing by main()."""
    if command_name(argv) == "tail":
        STOP.install()
