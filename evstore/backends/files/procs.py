"""Worker processes for the file backend's and the tools' parallel work
(export's formatting, import's checks, verify)."""
from __future__ import annotations


def mp_context():
    """A multiprocessing context for worker processes, or None.  fork is
    cheapest, but forking a process with other threads can deadlock the
    child: then forkserver, where the platform has it."""
    import multiprocessing as mp
    import threading

    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return mp.get_context("fork")
    if "forkserver" in methods:
        return mp.get_context("forkserver")
    return None
