"""Many processes on one store, on files and on PostgreSQL: writers with
exact expected versions and retries, and a real ``tail -f --all`` process
following them.  At the end: positions and versions dense, every
acknowledged batch present exactly once, no batch in part, and the
follower saw every position exactly once, in order (a follower that skips
an event committed late would show a hole).  On PostgreSQL also: the server
crashes and restarts under a ``tail -f --checkpoint`` follower, which
(restarted when it exited with an error) resumes without skipping.

A writer acknowledges a batch by printing one JSON line after ``append``
returned; a line cut short by a kill was never acknowledged.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import cli_env
from core_helpers import json_lines, spawn
from evstore import EventStore

from .helpers import kind_of

WRITER = r"""
import json, sys, uuid
from evstore import EventStore, WrongExpectedVersion
loc, name, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with EventStore(loc, lock_timeout=30) as es:
    i = 0
    while count < 0 or i < count:
        k, tag = 1 + i % size, f"{name}-{i}"
        evs = [{"type": "T", "data": {"j": j}, "metadata": {"batch": tag, "size": k},
                "id": str(uuid.uuid4())} for j in range(k)]
        stream = "shared" if i % 2 == 0 else "own-" + name
        while True:   # exact expected versions, retried on conflict
            try:
                r = es.append(stream, evs, expected_version=es.version(stream))
                break
            except WrongExpectedVersion:
                continue
        print(json.dumps({"batch": tag, "ids": [e["id"] for e in evs]}), flush=True)
        i += 1
"""


def check_store(location, acked: list[dict]) -> list:
    with EventStore(location) as es:
        evs = list(es.read_all())
        assert [e.position for e in evs] == list(range(1, len(evs) + 1)), "positions not dense"
        versions: dict[str, int] = {}
        batches: dict[str, list] = {}
        for e in evs:
            versions[e.stream] = versions.get(e.stream, 0) + 1
            assert e.version == versions[e.stream], f"version gap in {e.stream!r}"
            batches.setdefault(e.metadata["batch"], []).append(e)
        for tag, members in batches.items():
            assert len(members) == members[0].metadata["size"], f"partial batch {tag}"
        ids = [e.id for e in evs]
        assert len(ids) == len(set(ids)), "an event stored twice"
        for a in acked:
            assert set(a["ids"]) <= set(ids), f"acknowledged batch {a['batch']} lost"
        assert es.verify().ok
        return evs


def follower(location, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env(location))


def test_writers_in_processes_and_a_tail_follower(store_dir):
    writers, batches, size = 4, 16, 3
    total = writers * sum(1 + i % size for i in range(batches))
    # the first append creates the store; then the follower starts on it
    with EventStore(store_dir) as es:
        es.append("seed", [{"type": "Seed", "metadata": {"batch": "seed", "size": 1}}])
    total += 1
    tail = follower(store_dir, "--from", "1", "--max-count", str(total),
                    "--idle-timeout", "60")
    procs = [spawn(WRITER, store_dir, f"w{n}", batches, size) for n in range(writers)]
    acked = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        acked += json_lines(out)
    out, err = tail.communicate(timeout=120)
    assert tail.returncode == 0, err.decode()
    seen = [json.loads(line)["position"] for line in out.decode().split("\n") if line]
    assert seen == list(range(1, total + 1)), "the follower skipped or repeated an event"
    evs = check_store(store_dir, acked)
    assert len(evs) == total and len(acked) == writers * batches


def test_server_crash_under_a_checkpoint_follower(pg_server, pg_url):
    if not pg_server.can_crash:
        pytest.skip("EVSTORE_TEST_PG points at a server we do not crash")
    from pg_server import wait_ready
    assert kind_of(pg_url) == "postgres"
    writers = [spawn(WRITER, pg_url, f"w{n}", 40, 3) for n in range(2)]
    runs, seen = [], []

    def start():
        runs.append(follower(pg_url, "--checkpoint", "crash", "--idle-timeout", "3"))

    start()
    with EventStore(pg_url) as es:
        deadline = time.monotonic() + 60
        while es.head() < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    pg_server.stop("immediate")
    time.sleep(0.3)
    pg_server.start()
    wait_ready(pg_server.url)
    acked = []
    for p in writers:  # a writer may die with the server: what it acked counts
        out, _ = p.communicate(timeout=120)
        acked += json_lines(out)
    # followers that exited with an error are restarted until one ends idle
    while True:
        out, err = runs[-1].communicate(timeout=120)
        seen += [json.loads(line)["position"] for line in out.decode().split("\n")
                 if line.startswith("{")]
        if runs[-1].returncode == 0:
            break
        assert len(runs) < 20, err.decode()
        time.sleep(0.2)
        start()
    evs = check_store(pg_url, acked)
    # at least once, in order, nothing skipped: a repeat can only restart
    # at or before the last position delivered
    assert sorted(set(seen)) == [e.position for e in evs], "the follower skipped an event"
    high = 0
    for pos in seen:
        assert pos <= high + 1, f"skipped from {high} to {pos}"
        high = max(high, pos)


def test_verify_beside_writers_deletes_and_compactions(store_dir):
    """verify runs while writer processes append and this process deletes,
    truncates and compacts: every report is sound.  (Found: on PostgreSQL,
    verify read the events and the catalogue in separate transactions, so a
    commit between them looked like damage; on files, a compaction step
    replacing a segment verify was reading did.)"""
    with EventStore(store_dir) as es:
        es.append("seed", [{"type": "Seed", "metadata": {"batch": "seed", "size": 1}}])
    procs = [spawn(WRITER, store_dir, f"w{n}", -1, 3) for n in range(2)]
    try:
        with EventStore(store_dir) as es:
            deadline = time.monotonic() + 2
            rounds = 0
            while time.monotonic() < deadline or rounds < 3:
                for name in ("own-w0", "own-w1"):
                    v = es.version(name)
                    if v > 4:
                        es.truncate(name, before=v - 2)
                es.compact()
                report = es.verify()
                assert report.ok, [p.to_dict() for p in report.problems]
                rounds += 1
    finally:
        for p in procs:
            p.kill()
            p.wait()
    with EventStore(store_dir) as es:
        assert es.verify().ok
