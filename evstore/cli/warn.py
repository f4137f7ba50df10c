"""The library's warnings on the command line: one ``evstore: warning:``
line on stderr each, never Python's two-line ``file:line: Category`` form.

The library never prints; where it must tell a reader something while still
giving the right answer (a damaged copy of an event was served from the
other copy: :class:`evstore.errors.DamagedCopyWarning`) it uses
:mod:`warnings`, whose default filter shows each message once per process.
"""
from __future__ import annotations

import sys
import warnings


def install() -> None:
    """Show evstore's warnings as one line each on stderr (even with
    --quiet: they are about damage, not progress)."""
    from ..errors import DamagedCopyWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DamagedCopyWarning):
            try:
                sys.stderr.write(f"evstore: warning: {message}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            return
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    warnings.simplefilter("default", DamagedCopyWarning)
