"""The writer lock cannot be taken from under its holder (issue 12, item 1).

The lock is the store directory itself: removing or replacing
``writer.lock`` while a writer holds the lock must not let a second writer
in.  A writer whose ``--lock-timeout`` runs out names the holder.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter

import filelock
import pytest

from cli_helpers import appended, error, ok, run, tree
from conftest import run_cli
from core_helpers import LONG, check_dense, json_lines, spawn
from evstore import EventStore
from evstore.backends.files.locking import WriterLock, describe_holder, read_holder
from evstore.errors import CorruptStore, StoreLocked
from evstore.ops import verify

fcntl = pytest.importorskip("fcntl")

HOLDER = r"""
import sys
from evstore import EventStore
with EventStore(sys.argv[1]) as es:
    with es.writer_lock():
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin
"""


def _hold(store):
    p = spawn(HOLDER, store, stdin=subprocess.PIPE)
    line = p.stdout.readline()
    assert b"held" in line, p.stderr.read()
    return p


def _release(p):
    p.stdin.close()
    assert p.wait(timeout=30) == 0, p.stderr.read()
    p.stdout.close()
    p.stderr.close()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_removed_or_replaced_lock_file_does_not_let_a_second_writer_in(tmp_path, how):
    store = tmp_path / "store"
    with EventStore(store) as es:
        es.append("s", [{"type": "A"}])
    holder = _hold(store)
    try:
        lock = store / "writer.lock"
        os.unlink(lock)
        if how == "replaced":
            lock.write_bytes(b"")
        with pytest.raises(StoreLocked):
            with EventStore(store, lock_timeout=0.3) as es:
                es.append("s", [{"type": "B"}])
        r = run_cli("append", "s", "--type", "C", "--lock-timeout", "0.3", store=store)
        assert r.returncode == 1, r.stderr
        assert b"locked by another writer" in r.stderr and not r.stdout
    finally:
        _release(holder)
    with EventStore(store) as es:
        assert [e.type for e in es.read("s")] == ["A"]
        es.append("s", [{"type": "D"}])  # and the lock is free again
    assert verify(store, settle=0).ok


def test_an_old_style_lock_on_writer_lock_still_excludes_and_is_excluded(tmp_path):
    """Writers of earlier versions lock only writer.lock: a new writer
    respects that lock and takes it too, so both kinds exclude each other."""
    store = tmp_path / "store"
    EventStore(store).close()
    fd = os.open(store / "writer.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # an old writer
        with pytest.raises(StoreLocked):
            with EventStore(store, lock_timeout=0.2) as es:
                es.append("s", [{"type": "A"}])
        fcntl.flock(fd, fcntl.LOCK_UN)
        lk = WriterLock(str(store / "writer.lock"))
        with lk.hold():  # a new writer: the old one cannot get in
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lk.close()
    finally:
        os.close(fd)


WRITER = r"""
import json, sys, uuid
from evstore import EventStore, NewEvent
from evstore.errors import WrongExpectedVersion
path, wid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with EventStore(path, sync=False, lock_timeout=60) as es:
    print("ready", flush=True)
    sys.stdin.readline()
    for b in range(n):
        ids = [str(uuid.uuid4()) for _ in range(1 + b % 3)]
        evs = [NewEvent("T", {"w": wid, "b": b}, None, i) for i in ids]
        stream = "hot" if b % 2 else f"own-{wid}"
        while True:
            expected = es.version(stream)
            try:
                r = es.append(stream, evs, expected_version=expected)
                break
            except WrongExpectedVersion:
                pass
        print(json.dumps({"stream": stream, "expected": expected, "version": r.version,
                          "position": r.position, "ids": ids}), flush=True)
"""


def test_concurrent_writers_while_the_lock_file_is_deleted(tmp_path):
    """Writers in four processes with exact expected versions while the
    lock file is removed and replaced over and over: every acknowledged
    event is there once, where its append said, and verify is sound."""
    store = tmp_path / "store"
    EventStore(store).close()
    n = 400 if LONG else 80
    procs = [spawn(WRITER, store, w, n, stdin=subprocess.PIPE) for w in range(4)]
    for p in procs:
        assert b"ready" in p.stdout.readline(), p.stderr.read()
    stop = threading.Event()
    removals = [0]

    def vandal():
        lock = store / "writer.lock"
        while not stop.is_set():
            try:
                os.unlink(lock)
                removals[0] += 1
            except FileNotFoundError:
                pass
            if removals[0] % 2:
                try:
                    lock.write_bytes(b"")
                except OSError:
                    pass
            time.sleep(0.0005)

    t = threading.Thread(target=vandal)
    t.start()
    try:
        for p in procs:
            p.stdin.write(b"go\n")
            p.stdin.close()
        acks = []
        for p in procs:
            out, err = p.stdout.read(), p.stderr.read()
            p.wait(timeout=120)
            assert p.returncode == 0, err.decode()
            acks.extend(json_lines(out))
    finally:
        stop.set()
        t.join()
    assert removals[0] > 10
    assert len(acks) == 4 * n
    report = verify(store, settle=0)
    assert report.ok, [str(p) for p in report.problems]
    with EventStore(store) as es:
        events = list(es.read_all())
    check_dense(events)
    count = Counter(e.id for e in events)
    by_id = {e.id: e for e in events}
    for a in acks:
        assert all(count[i] == 1 for i in a["ids"]), a
        evs = [by_id[i] for i in a["ids"]]
        assert evs[-1].version == a["version"] == a["expected"] + len(a["ids"])
        assert evs[-1].position == a["position"] and {e.stream for e in evs} == {a["stream"]}
    assert len(events) == sum(len(a["ids"]) for a in acks)


def test_a_lock_timeout_names_the_holder(tmp_path):
    store = tmp_path / "store"
    EventStore(store).close()
    holder = _hold(store)
    try:
        r = run_cli("append", "s", "--type", "C", "--lock-timeout", "0.2", store=store)
        err = r.stderr.decode()
        assert r.returncode == 1 and not r.stdout, err
        assert f"held by pid {holder.pid} (" in err, err
        assert " since 20" in err and "UTC" in err, err
        assert err.count("\n") == 1, err
    finally:
        _release(holder)


def test_config_takes_a_lock_timeout(tmp_path):
    store = tmp_path / "store"
    EventStore(store).close()
    holder = _hold(store)
    try:
        t0 = time.monotonic()
        r = run_cli("config", "snapshot-every", "5", "--lock-timeout", "0.2", store=store)
        assert r.returncode == 1, r.stderr
        assert b"locked by another writer" in r.stderr and time.monotonic() - t0 < 20
    finally:
        _release(holder)
    r = run_cli("config", "snapshot-every", "5", "--lock-timeout", "1", store=store)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("content", [
    b"", b"garbage\n", b"12 34\n", b"1 2 evstore \x1b[31m\n", b"\xff" * 300,
    b"999999999 1700000000000000 evstore append\n",  # no such process
])
def test_the_holder_line_is_advice(tmp_path, content):
    path = tmp_path / "writer.lock"
    path.write_bytes(content)
    assert read_holder(str(path)) is None
    assert describe_holder(str(path)) == "holder unknown"


def test_the_holder_line_is_never_read_through_a_link(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(f"{os.getpid()} 1700000000000000 SECRET-MARKER\n".encode())
    link = tmp_path / "writer.lock"
    os.symlink(secret, link)
    assert read_holder(str(secret)) is not None  # well-formed: only the link stops it
    assert describe_holder(str(link)) == "holder unknown"


def test_a_link_at_writer_lock_is_refused_and_not_created(tmp_path):
    store = tmp_path / "store"
    EventStore(store).close()
    target = tmp_path / "made-through-the-link"
    os.symlink(target, store / "writer.lock")
    with pytest.raises(CorruptStore, match="symbolic link"):
        with EventStore(store, lock_timeout=1) as es:
            es.append("s", [{"type": "A"}])
    assert not os.path.lexists(target)
    r = run_cli("append", "s", "--type", "A", store=store)
    assert r.returncode == 6 and b"symbolic link" in r.stderr, r.stderr
    assert not os.path.lexists(target)


@pytest.mark.parametrize("argv, want", [
    (["/usr/bin/evstore", "append", "s", "--data", '{"secret": 1}'], "evstore append s"),
    (["/x/evstore/__main__.py", "import", "big.ndjson", "--lock-timeout", "3"],
     "evstore import big.ndjson"),
    (["myservice.py", "--password", "hunter2"], "myservice.py"),
])
def test_the_holder_line_never_records_option_values(monkeypatch, argv, want):
    from evstore.backends.files import locking

    monkeypatch.setattr("sys.argv", argv)
    assert locking._command() == want


def test_cli_lock_timeout_is_exit_1(store_dir):
    """Moved from test_cli_append.py: it takes the file lock itself."""
    ok(run(store_dir, "append", "s", "--type", "A"))
    before = tree(store_dir)
    lock = filelock.UnixFileLock(str(store_dir / "writer.lock"))
    with lock.acquire(timeout=5):
        t0 = time.monotonic()
        r = run(store_dir, "append", "s", "--type", "B", "--lock-timeout", "0.2")
        elapsed = time.monotonic() - t0
    msg = error(r, 1)
    assert "locked by another writer" in msg, msg
    assert 0.2 <= elapsed < 10
    assert tree(store_dir) == before
    appended(run(store_dir, "append", "s", "--type", "B", "--lock-timeout", "0"), "s", 2, 2, 1)
