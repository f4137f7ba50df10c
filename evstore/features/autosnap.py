"""Automatic snapshots: the snapshot an append that crosses a multiple of
``snapshot_every`` calls for, made by replaying the stream.

Why apart from :mod:`evstore.features.snapshots`: that module owns the
snapshot document and is what replay reads; making one automatically needs
replay (and a reducer), so here the two meet without importing each other.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Callable

from .snapshots import Snapshot, SnapshotNotFound, SnapshotStore

log = logging.getLogger("evstore")


def crossed(every: int, before: int, after: int) -> int | None:
    """The highest multiple of ``every`` in (before, after], or None."""
    if not every or every < 1 or after <= before:
        return None
    top = after - after % every
    return top if top > before and top > 0 else None


#: How long an append waits for its automatic snapshot (seconds) before
#: leaving it behind: ``EventStore(snapshot_timeout=...)``; the command line
#: reads $EVSTORE_SNAPSHOT_TIMEOUT.
SNAPSHOT_TIMEOUT = 5.0


def _warn(message: str) -> None:
    log.warning("evstore: warning: %s", message)


def auto_snapshot(store, stream: str, version_before: int, version_after: int, *,
                  every: int | None = None, reducer=None,
                  warn: Callable[[str], None] | None = None) -> Snapshot | None:
    """Save the automatic snapshot an append from ``version_before`` to
    ``version_after`` calls for, here and now (no time limit: see
    :func:`auto_snapshot_bounded`).  ``every`` and ``reducer`` default to the
    store's ``snapshot_every`` and ``reducer``.

    Saves the state at the highest multiple of ``every`` that the append
    crossed (a batch crossing several saves one: the older ones would never
    be the latest).  The append has already succeeded, so a failure here (a
    reducer that raises -- even ``sys.exit`` --, a full disk) must not turn it
    into an error the caller would retry: it is passed to ``warn`` (default:
    a warning on the ``evstore`` logger) and None is returned.  Two processes
    racing to save the same snapshot write equal states, and the atomic
    rename makes one whole file win.
    """
    every = store.snapshot_every if every is None else every
    spec = store.reducer if reducer is None else reducer
    target = crossed(every, version_before, version_after)
    if target is None:
        return None
    from .reducers import load_reducer, signal_passes
    from .replay import replay

    try:
        r = load_reducer(spec, base=store.directory)
        snaps = SnapshotStore(store)
        try:
            h = snaps.header(stream, target)
            if h.problem is None and h.fingerprint == r.fingerprint:
                return None  # another process saved it already
        except SnapshotNotFound:
            pass
        state, version = replay(store, stream, r, to_version=target)
        return snaps.save(stream, state, version, r)
    except BaseException as e:  # noqa: BLE001 - never fail the append (the reducer's code)
        signal_passes(e)
        (warn or _warn)(f"automatic snapshot of {stream!r} at version {target} not saved: {e}")
        return None


#: the automatic-snapshot thread of each store that has one
_running: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def auto_snapshot_bounded(store, stream: str, version_before: int, version_after: int,
                          timeout: float | None = None) -> None:
    """What ``EventStore.append`` runs after its commit: :func:`auto_snapshot`
    in a daemon thread, waited for at most ``timeout`` seconds (default
    :data:`SNAPSHOT_TIMEOUT`).

    An append must never hang on its snapshot: a reducer that loops would
    hold the caller's acknowledgement forever (and a retry would append the
    events twice).  When the time is up the append returns and a warning
    says the snapshot was skipped; the thread cannot be stopped, so it runs
    on in the background (a daemon: it does not keep the process alive), and
    while it does, this store's later appends skip their automatic snapshots
    (with a warning) instead of starting more.  A reducer that never lets
    go of the GIL (a long loop inside one C call) cannot be bounded this way;
    the command line runs its snapshots in a child process it can kill.
    """
    if crossed(store.snapshot_every, version_before, version_after) is None:
        return
    timeout = SNAPSHOT_TIMEOUT if timeout is None else timeout
    busy = _running.get(store)
    if busy is not None and busy.is_alive():
        _warn(f"automatic snapshot of {stream!r} skipped: an earlier one of this store "
              f"has been running for more than {timeout:g} s (does the reducer loop?)")
        return
    t = threading.Thread(target=auto_snapshot, name="evstore-auto-snapshot", daemon=True,
                         args=(store, stream, version_before, version_after))
    _running[store] = t
    t.start()
    t.join(timeout)
    if t.is_alive():
        _warn(f"automatic snapshot of {stream!r} skipped: not made within {timeout:g} s "
              "(does the reducer loop?); the append itself is committed")
    else:
        _running.pop(store, None)
