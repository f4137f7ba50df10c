"""Many processes on one PostgreSQL store, and the server or writers dying.

"Writers on several machines" are several processes here, each with its
own connections.  Every test ends with the same checks: positions dense
1..head, every stream's versions dense, each batch whole or absent, every
acknowledged batch present exactly once, and the backend's own verify
clean.  A writer acknowledges a batch by printing one JSON line *after*
``append`` returned; a line cut short by a kill was never acknowledged.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from evstore.backends import open_backend

from core_helpers import json_lines, spawn
from pg_server import wait_ready

WRITER = r"""
import json, sys
from evstore.backends import open_backend
from evstore.core.backend import Prepared
from evstore.model import normalize, pack_fields
from evstore.errors import EvstoreError, WrongExpectedVersion
url, name, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
b = open_backend(url, lock_timeout=20)
i = 0
while count < 0 or i < count:
    batch, k = f"{name}-{i}", 1 + i % size
    evs = []
    for j in range(k):
        e = normalize({"type": "T", "data": {"j": j}, "metadata": {"batch": batch, "size": k}})
        evs.append(Prepared(e.id, e.type, pack_fields(e, 1 << 20)))
    shared = i % 2 == 0
    stream = "shared" if shared else "own-" + name
    try:
        while True:
            try:
                r = b.append(stream, evs, b.version(stream) if shared else "any")
                break
            except WrongExpectedVersion:
                continue
    except EvstoreError as e:
        print("error:", e, file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"batch": batch, "ids": [e.id for e in evs],
                      "position": r.result.position}), flush=True)
    i += 1
"""

FOLLOWER = r"""
import json, sys, time
from evstore.backends import open_backend
url, total = sys.argv[1], int(sys.argv[2])
b = open_backend(url)
seen, deadline = [], time.monotonic() + 60
while (not seen or seen[-1] < total) and time.monotonic() < deadline:
    seen += [e.position for e in b.read_all(lo=(seen[-1] if seen else 0) + 1)]
print(json.dumps(seen))
"""


def check_store(url: str, acked: list[dict]) -> list:
    """The checks of the module docstring; returns the events."""
    b = open_backend(url, create=False)
    try:
        evs = list(b.read_all())
        assert [e.position for e in evs] == list(range(1, len(evs) + 1))
        versions: dict[str, int] = {}
        batches: dict[str, list] = {}
        for e in evs:
            versions[e.stream] = versions.get(e.stream, 0) + 1
            assert e.version == versions[e.stream], f"version gap in {e.stream!r}"
            batches.setdefault(e.metadata["batch"], []).append(e)
        for name, members in batches.items():
            assert len(members) == members[0].metadata["size"], f"partial batch {name}"
            assert [m.position for m in members] == list(
                range(members[0].position, members[0].position + len(members)))
        ids = [e.id for e in evs]
        assert len(ids) == len(set(ids)), "an event stored twice"
        stored = set(ids)
        for a in acked:
            assert set(a["ids"]) <= stored, f"acknowledged batch {a['batch']} lost"
        assert b.verify() == []
        return evs
    finally:
        b.close()


def test_writers_in_processes_and_a_polling_follower(pg_url):
    writers, batches, size = 4, 24, 3
    total = writers * sum(1 + i % size for i in range(batches))
    follower = spawn(FOLLOWER, pg_url, total)
    procs = [spawn(WRITER, pg_url, f"w{n}", batches, size) for n in range(writers)]
    acked = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        acked += json_lines(out)
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err.decode()
    assert json.loads(out) == list(range(1, total + 1)), "the follower skipped or repeated"
    evs = check_store(pg_url, acked)
    assert len(evs) == total and len(acked) == writers * batches


def _run_then(pg_url, writers: int, events: int, action) -> list[dict]:
    """Start writers that never stop; once the store holds ``events``
    events (all writers busy), run ``action``; collect what was acked."""
    procs = [spawn(WRITER, pg_url, f"w{n}", -1, 5) for n in range(writers)]
    b = open_backend(pg_url)
    try:
        deadline = time.monotonic() + 60
        while b.head() < events and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        b.close()
    action(procs)
    acked = []
    for p in procs:
        try:
            out, _err = p.communicate(timeout=60)
        except Exception:
            p.kill()
            out, _err = p.communicate()
        acked += json_lines(out)
    assert acked, "no writer acknowledged anything before the fault"
    return acked


def test_writers_killed_mid_transaction(pg_url):
    # No schema yet: the writers' first appends race to create it.
    acked = _run_then(pg_url, 3, 150,
                      lambda procs: [os.kill(p.pid, signal.SIGKILL) for p in procs])
    check_store(pg_url, acked)
    b = open_backend(pg_url, lock_timeout=5)
    try:  # the dead writers' locks went with their connections
        head = b.head()
        from .helpers import prep
        assert b.append("after", prep("T"), "any").result.position == head + 1
    finally:
        b.close()


def test_server_crash_during_appends(pg_server, pg_url):
    if not pg_server.can_crash:
        pytest.skip("EVSTORE_TEST_PG points at a server we do not crash")

    def crash(_procs):
        pg_server.stop("immediate")
        pg_server.start()
        wait_ready(pg_server.url)

    acked = _run_then(pg_url, 3, 150, crash)
    evs = check_store(pg_url, acked)
    b = open_backend(pg_url)
    try:
        from .helpers import prep
        assert b.append("after", prep("T"), "any").result.position == len(evs) + 1
    finally:
        b.close()


HOLDER = r"""
import sys, time
from evstore.backends import open_backend
b = open_backend(sys.argv[1])
with b.hold_checkpoint("consumer"):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_checkpoint_hold_dies_with_its_holder(pg_url):
    from evstore.core.backend import ConsumerBusy
    b = open_backend(pg_url)
    try:
        p = spawn(HOLDER, pg_url)
        assert p.stdout.readline() == b"holding\n"
        with pytest.raises(ConsumerBusy):
            with b.hold_checkpoint("consumer"):
                pass
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closed socket at once; allow a moment
            try:
                with b.hold_checkpoint("consumer"):
                    break
            except ConsumerBusy:
                assert time.monotonic() < deadline, "the dead holder's lock was never released"
                time.sleep(0.05)
    finally:
        b.close()


def test_handles_and_followers_carry_on_after_a_server_restart(pg_server, pg_url):
    if not pg_server.can_crash:
        pytest.skip("EVSTORE_TEST_PG points at a server we do not restart")
    from .helpers import prep
    b = open_backend(pg_url)
    w = b.watcher()
    try:
        b.append("a", prep("T"), "any")
        pg_server.stop("immediate")
        pg_server.start()
        wait_ready(pg_server.url)
        calls = []
        head = b.head
        b.head = lambda: calls.append(1) or head()
        assert w.wait(1, 1.0) == 1
        assert len(calls) < 20, "the watcher spun on a dead connection"
        del b.head
        other = open_backend(pg_url)
        try:
            other.append("a", prep("T"), "any")
        finally:
            other.close()
        assert w.wait(1, 10) == 2  # listens again; no event skipped
        assert b.append("a", prep("T"), "any").result.position == 3  # no stale connection
        assert [e.position for e in b.read_all()] == [1, 2, 3]
    finally:
        w.close()
        b.close()
