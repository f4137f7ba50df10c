"""The ``evstore`` command line: parse, call the library, render, exit.

Nothing here knows how the store lays out its files; library errors become
exit codes in one place (:func:`evstore.cli.common.run`).  This module stays
light: :func:`main` installs the signal handlers before typer and the
library are imported (``interrupts.py``).
"""
from __future__ import annotations

import sys


def main(argv=None) -> None:
    """Entry point of the ``evstore`` script (:func:`evstore.cli.common.main`),
    after what must happen before the heavy imports: Ctrl-C and SIGTERM end
    any command with one line (:mod:`.interrupts`), and ``tail`` catches its
    stop signals from the first line on (:mod:`.early`).  A short command
    line that :mod:`.quick` fully understands runs without typer."""
    from ..errors import Interrupted
    from .interrupts import install

    install()
    try:
        from .early import prepare

        args = sys.argv[1:] if argv is None else argv
        prepare(args)
        from .quick import parse, run as run_quick

        plan = parse(args)
        if plan is not None:  # a short command this module fully understands: no typer
            run_quick(plan)
        from .common import main as run

        run(argv)
    except Interrupted as e:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):  # one line, even if pressed again
            signal.signal(sig, signal.SIG_IGN)
        try:
            sys.stderr.write(e.message() + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        raise SystemExit(e.exit_code) from None
