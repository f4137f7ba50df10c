"""The progress seam: long operations report to an object the caller passes;
the library never draws anything.  The CLI passes one that draws a rich bar
on stderr when stderr is a terminal (evstore/cli/cmd_ops.py)."""
from __future__ import annotations


class Progress:
    """Does nothing; subclass to show progress.  Each phase is one
    ``begin`` ... ``advance``* ... ``end``; totals may be unknown (None)."""

    def begin(self, label: str, total_bytes: int | None = None,
              total_events: int | None = None) -> None:
        pass

    def advance(self, events: int = 0, nbytes: int = 0) -> None:
        pass

    def end(self) -> None:
        pass


NO_PROGRESS = Progress()
