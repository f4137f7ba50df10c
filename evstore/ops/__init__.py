"""Operating a store: verify, repair, export, import (docs/OPERATIONS.md).

These work on a store's files, below the EventStore API, because they must
see damage that the API refuses to read past.  Each lives in its own module;
docs/OPERATIONS.md says what they check, what they change and why.
"""
from __future__ import annotations

from .progress import Progress
from .report import Action, Problem, RepairReport, VerifyReport


def verify(store, **kw) -> VerifyReport:
    """Check a store: a directory byte by byte (:mod:`.verifier`); any
    other backend through its own :meth:`~evstore.core.backend.Backend.verify`."""
    if getattr(store, "backend", None) is not None and store.directory is None:
        return _backend_report(store)
    from .verifier import verify as _verify

    return _verify(store, **kw)


def _backend_report(store) -> VerifyReport:
    """A VerifyReport from the problems a backend found (dense positions
    and versions, checksums, streams and snapshots consistent)."""
    import time

    from .report import Problem

    t0 = time.monotonic()
    found = store.backend.verify()
    stats = store.backend.stats()
    report = VerifyReport(store.backend.location)
    for p in found:
        problem = Problem(p["kind"], p["message"], stream=p.get("stream"),
                          version=p.get("version"), position=p.get("position"))
        (report.warnings if p.get("severity") == "warning" else report.problems).append(problem)
    report.stats = {"events": stats["events"], "streams": stats["streams"],
                    "bytes_checked": stats["bytes"], "seconds": round(time.monotonic() - t0, 3)}
    return report


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
