"""The ``evstore`` command line: parse, call the library, render, exit.

Nothing here knows how the store lays out its files; library errors become
exit codes in one place (:func:`evstore.cli.common.run`).
"""
from .common import main  # noqa: F401
