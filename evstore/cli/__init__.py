"""The ``evstore`` command line: parse, call the library, render, exit.

Nothing here knows how the store lays out its files; library errors become
exit codes in one place (:func:`evstore.cli.common.run`).
"""
from __future__ import annotations

import sys


def main(argv=None) -> None:
    """Entry point of the ``evstore`` script (:func:`evstore.cli.common.main`),
    after what must happen before the heavy imports (:mod:`.early`)."""
    from .early import prepare

    prepare(sys.argv[1:] if argv is None else argv)
    from .common import main as run

    run(argv)
