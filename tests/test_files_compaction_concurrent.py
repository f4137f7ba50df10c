"""Compaction while a writer process, readers and a follower work: they may
wait, never fail; the follower never sees a position twice nor out of order;
afterwards every event the cuts leave readable is there, and verify is clean."""
from __future__ import annotations

import threading
import time
import warnings

import pytest

from core_helpers import LONG, json_lines, spawn
from evstore import EventStore
from evstore.core.forgetting import Forgetting
from evstore.core.rules import ANY
from evstore.errors import DamagedCopyWarning

WRITER = r"""
import json, sys, time
from evstore import EventStore
path, n = sys.argv[1], int(sys.argv[2])
own = {}
with EventStore(path, segment_bytes=3000) as es:
    for b in range(n):
        s = f"w-{b % 4}" if b % 3 else f"doomed-{b // 30}"
        r = es.append(s, [{"type": "T", "data": {"b": b, "pad": "p" * (b % 50)}}] * (1 + b % 3),
                      expected_version=own.get(s, 0))
        own[s] = r.version
        print(json.dumps([s, r.version, r.position, r.count]), flush=True)
        time.sleep(0.001)  # compaction rounds run beside it
"""


def view_of(b):
    return lambda: Forgetting(b.cuts(), b.retention_rules(), time.time_ns() // 1000)


@pytest.mark.filterwarnings("error::evstore.errors.DamagedCopyWarning")
def test_compaction_beside_a_writer_readers_and_a_follower(tmp_path):
    """A reader that meets a file compaction replaced must not take it for
    damage (a DamagedCopyWarning is raised as an error here)."""
    path = tmp_path / "s"
    n = 600 if LONG else 240
    with EventStore(path, segment_bytes=3000) as es:
        es.append("start", [{"type": "Start"}])
    errors: list = []
    stop = threading.Event()
    seen: list = []

    def reader():
        warnings.simplefilter("error", DamagedCopyWarning)
        with EventStore(path) as es:
            b = es.backend
            while not stop.is_set():
                try:
                    list(b.read_all())
                    for s in ("w-1", "w-2"):
                        if b.version(s):
                            list(b.read_stream(s))
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    errors.append(("reader", repr(e)))
                    return

    def follower():
        with EventStore(path) as es:
            b = es.backend
            last = 0
            while not stop.is_set() or last < b.head():
                try:
                    for e in b.read_all(last + 1):
                        assert e.position > last, (e.position, last)
                        seen.append((e.position, e.stream, e.version, e.id))
                        last = e.position
                except Exception as e:  # noqa: BLE001
                    errors.append(("follower", repr(e)))
                    return
                time.sleep(0.005)

    threads = [threading.Thread(target=reader, daemon=True),
               threading.Thread(target=follower, daemon=True)]
    for t in threads:
        t.start()
    w = spawn(WRITER, path, n)
    try:
        _run(path, w, n, stop, threads, errors, seen)
    finally:
        stop.set()
        if w.poll() is None:
            w.kill()


def _run(path, w, n, stop, threads, errors, seen):
    with EventStore(path) as es:
        b = es.backend
        k = removed = rounds = 0
        while w.poll() is None:
            time.sleep(0.02)
            for s in [f"doomed-{k}"]:
                if b.version(s):
                    b.cut(s, ANY, None, False)
            k += 1
            v = b.version("w-1")
            if v > 3:
                b.cut("w-1", ANY, v - 2, False)
            removed += b.compact(view_of(b))["events_removed"]
            rounds += 1
        out, err = w.communicate()
        assert w.returncode == 0, err.decode()
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert rounds >= 2 and removed > 0, (rounds, removed)  # it did run beside them
        acks = json_lines(out)
        assert len(acks) == n
        b.compact(view_of(b))
        view = view_of(b)()
        present = {e.position: e for e in b.read_all()}
        for s, version, position, count in acks:
            cur = b.version(s)
            for i in range(count):
                if version - count + 1 + i >= view.first_version(s, cur):
                    assert position - count + 1 + i in present, (s, version, position)
        # what the follower saw is what was written there
        for p, s, v, eid in seen:
            if p in present:
                assert (present[p].stream, present[p].version, present[p].id) == (s, v, eid)
        assert [p for p, *_ in seen] == sorted({p for p, *_ in seen})
        report = es.verify()
        assert report.ok, report.problems
