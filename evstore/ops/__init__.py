"""Operating a store: verify, repair, export, import (SPEC §3).

These work on a store's files, below the EventStore API, because they must
see damage that the API refuses to read past.  Each lives in its own module;
docs/OPERATIONS.md says what they check, what they change and why.
"""
from __future__ import annotations

from .progress import Progress
from .report import Action, Problem, RepairReport, VerifyReport


def verify(store, **kw) -> VerifyReport:
    from .verifier import verify as _verify

    return _verify(store, **kw)


def repair(store, **kw) -> RepairReport:
    from .repairer import repair as _repair

    return _repair(store, **kw)


def export_events(store, out, **kw) -> int:
    from .transfer import export_events as _export

    return _export(store, out, **kw)


def import_events(store, source, **kw):
    from .transfer import import_events as _import

    return _import(store, source, **kw)


__all__ = ["verify", "repair", "export_events", "import_events", "Progress",
           "Problem", "VerifyReport", "RepairReport", "Action"]
