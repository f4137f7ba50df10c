"""The directory store's Watcher (backends/files/watch.py): inotify on the
commit log, and its fallback to polling when a commit comes unannounced
(docs/TAIL.md, "Waiting")."""
from __future__ import annotations

import os
import threading
import time

import pytest

from evstore import EventStore
from evstore.backends.files.watch import inotify_watch


def ev():
    return {"type": "T", "data": {}}


@pytest.fixture
def es(tmp_path):
    with EventStore(tmp_path / "store") as s:
        s.append("a", [ev()])
        yield s


def _append_later(es, delay=0.1):
    t = threading.Timer(delay, lambda: es.append("a", [ev()]))
    t.start()
    return t


def test_a_commit_wakes_the_watcher_at_once(es):
    w = es.watcher()
    try:
        if not w.notifying:
            pytest.skip("no inotify here")
        t = _append_later(es)
        t0 = time.monotonic()
        assert w.wait(1, 5) == 2 and time.monotonic() - t0 < 2
        t.join()
        assert w.notifying
    finally:
        w.close()


def test_an_unannounced_commit_turns_notifications_off(es, tmp_path):
    """A commit found by a look after a sleep nothing interrupted, with no
    notification within the grace, means notifications are lost here (a
    network file system): the watcher polls from then on."""
    w = es.watcher()
    try:
        if not w.notifying:
            pytest.skip("no inotify here")
        os.close(w.inotify)  # watch somewhere commits never touch instead
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        w.inotify = inotify_watch(str(elsewhere))
        t = _append_later(es)
        assert w.wait(1, 0.5) == 2  # found by the look after the sleep
        t.join()
        assert not w.notifying
        t = _append_later(es, 0.05)
        t0 = time.monotonic()
        assert w.wait(2, 5) == 3 and time.monotonic() - t0 < 1  # polling finds it
        t.join()
    finally:
        w.close()


def test_wake_ends_a_wait_and_is_harmless_after_close(es):
    w = es.watcher()
    threading.Timer(0.1, w.wake).start()
    t0 = time.monotonic()
    assert w.wait(1, 10) == 1 and time.monotonic() - t0 < 5
    w.close()
    w.wake()  # never writes to a closed descriptor
